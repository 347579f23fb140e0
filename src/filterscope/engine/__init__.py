"""The optimization engine: what a render is and the loop that makes it.

* :mod:`.objectives` (what to maximize; registered) and :mod:`.objective_syntax` (objectives as text);
* :mod:`.params` (how an image is parameterized; registered) and :mod:`.transforms` (random transforms; registered);
* :mod:`.recipes` (the numbers of a multi-scale schedule, plain data; named ones registered);
* :mod:`.identity` (what makes two renders the same image: resume and atlas keys);
* :mod:`.results` (a render's images, scores and PNG metadata);
* :mod:`.render` (the loop) and :mod:`.naive` (the paper's loop written plainly: the oracle the loop is checked
  against).

It runs the network through :mod:`filterscope.runtime`; every public name is also ``fs.<name>``. The modules
lived at the top of the package until 0.9: ``filterscope.recipes`` and the like still import, with a
``DeprecationWarning``, for one release.
"""
