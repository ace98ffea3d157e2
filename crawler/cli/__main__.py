"""``python -m crawler.cli``: the ``litwatch`` command without an installed entry point.

End-to-end tests run the CLI this way as a subprocess (Scrapy's reactor cannot be restarted
inside one process, so every crawl needs a fresh interpreter).
"""

from crawler.cli.app import main

main()
