"""The Alpaca venue through the official ``alpaca-py`` SDK: the accounts file
(:mod:`.accounts`), paper/live detection (:mod:`.detection`), the balance check
(:mod:`.guard`) and the thread-safe account pool behind the ``Broker`` seam (:mod:`.broker`)."""
