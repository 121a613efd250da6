"""Rule toolkits."""
