"""``semdraw-serve``: painters over the network on Ray Serve (``pip install -e ".[serve]"``).

``protocol`` (the wire, as values), ``sessions`` (shared canvases and the one order of their edits),
``replica`` (one replica's painters and tick loop), ``app`` (the Serve deployment), ``client`` (a
painter in Python), ``cli`` (the command). The library core (``semdraw``) imports none of this.
"""
