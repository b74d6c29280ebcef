"""Monitoring: the prediction log of served answers, people's feedback on them, and the drift
of served traffic; apart from HTTP (digits.serving writes the log, the CLI and flows read it)."""
