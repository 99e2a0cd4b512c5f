"""How the tests start Debian's Chromium: headless, and without the background traffic that this
machine's closed network refuses (imported by the hitgen and hitserver browser tests)."""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
