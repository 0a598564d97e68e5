"""Who is calling and what they may do: API keys, teams, limits. The gateway asks; state/ remembers."""
