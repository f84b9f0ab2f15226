"""Speed options of one GPU (or CPU): compiled DiT blocks, torchao quantization, step caches and
attention kernels. All of them are off by default, and with all of them off nothing here runs.

* :mod:`cogvid.speed.options` (torch-free): the option names, parsing and the checks that need no
  torch (what the request and ``--dry-run`` use);
* :mod:`cogvid.speed.device`: the checks that need the resolved device (before any weights load);
* :mod:`cogvid.speed.blocks`: the DiT's block stack as compilable modules, with the step caches;
* :mod:`cogvid.speed.attention`, :mod:`cogvid.speed.quantize`, :mod:`cogvid.speed.cache`;
* :mod:`cogvid.speed.setup`: puts a loaded engine in the state its :class:`~cogvid.request.ModelChoice` asks.
"""
