"""``litwatch run``: the scheduler (:mod:`.scheduler`), its jobs (:mod:`.jobs`), crawl
subprocesses (:mod:`.children`) and the embedded web server (:mod:`.web`)."""
