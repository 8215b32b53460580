"""p2psync tests; helpers are imported as ``tests.<helper>`` (one import style).

A regular package (not a namespace one) so ``tests.*`` resolves here even when an installed
distribution ships a top-level ``tests`` package of its own (mutmut 3.3 does).
"""
