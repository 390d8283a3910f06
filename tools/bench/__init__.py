"""`make bench`: each module here is one benchmark with a `run()`."""
