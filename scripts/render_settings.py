"""Write `.env.example` and print the README settings table, both from the `Settings` fields.

    python -m scripts.render_settings

Run it after adding or changing a setting, so the example file and the README cannot
drift from the code (tests/test_config.py checks that they list the same keys).
"""

from __future__ import annotations

from dataclasses import fields

from utils.utils_config import PROJECT_ROOT, Settings

# The first key of each group, and the heading written above it.
GROUPS = {
    "KAFKA_BOOTSTRAP_SERVERS": "Kafka connection",
    "KAFKA_SECURITY_PROTOCOL": "Security for real clusters (leave empty for the local broker)",
    "PRODUCER_MACHINES": "Producer",
    "CONSUMER_GROUP_ID": "Consumer and SQLite",
    "ALERT_TEMPERATURE_MAX_C": "Alerts",
    "ALERT_EMAIL_ENABLED": "Alert delivery by email and to a Kafka topic (off by default)",
    "VALID_TEMPERATURE_C": "Validation: readings outside these ranges are rejected",
    "CHART_INTERVAL_MS": "Chart and logs",
}


def render_env_example() -> str:
    lines = ["# Copy to .env and edit. Environment variables that are set win over this file.",
             "# Every key is optional: a missing or comment-only value takes the default shown here."]
    for spec in fields(Settings):
        meta = spec.metadata
        if meta["env"] in GROUPS:
            lines += ["", f"# --- {GROUPS[meta['env']]}"]
        about = meta["about"]
        lines.append(f"# {about[0].upper() + about[1:] if not about.startswith('min.') else about}.")
        lines.append(f"{meta['env']}={meta['default']}")
    return "\n".join(lines) + "\n"


def render_readme_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for spec in fields(Settings):
        meta = spec.metadata
        rows.append(f"| `{meta['env']}` | `{meta['default']}` | {meta['about']} |" if meta["default"]
                    else f"| `{meta['env']}` | (empty) | {meta['about']} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    (PROJECT_ROOT / ".env.example").write_text(render_env_example())
    print(render_readme_table(), end="")


if __name__ == "__main__":
    main()
