"""The reference implementation of the paper-trading app contract (the app's stand-in).

It runs as the blue and green app colors in the dev stack, the ci stack and the Docker
tests, with switchable faults (see `reference_app.server`). Run it with

    python3 -m reference_app --port 3000 --color blue

The HTTP side is Python's standard library only; the background work (issue 15) also
needs pika and redis, imported only when WORK_ENABLED is true.
"""
