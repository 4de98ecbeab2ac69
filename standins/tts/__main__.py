"""`python -m standins.tts {openai,fish,cosyvoice}`: see cli.py."""

from .cli import main

raise SystemExit(main())
