"""Patches: what changed between two JSON views of a document, as a short list of operations an
app applies to its own copy instead of re-reading the document (issue 14).

automerge 1.0.0rc1's ``Document.diff`` returns patch objects with no readable fields (only a
debug string), so patches are computed here from the JSON views before and after a change
(:meth:`~p2psync.replica.document.Document.to_json` at the tree heads before and after). The
format follows Automerge's own patches:

* ``{"action": "put", "path": [...], "value": v}`` — a map key or list element set (also a
  counter's new total, and a whole value whose type changed);
* ``{"action": "del", "path": [..., key_or_index], "length": n}`` — a map key, or ``n`` list
  elements / characters from that index;
* ``{"action": "insert", "path": [..., index], "values": [...]}`` — list elements;
* ``{"action": "splice", "path": [..., index], "value": "text"}`` — characters into a text.

Applying the patches in order to the "before" view gives the "after" view (a property test
checks it). Lists and texts are compared by common prefix and suffix: one contiguous edit is
one patch pair, which is what typing and most app edits produce.
"""

from __future__ import annotations

from typing import Any

Path = list[str | int]


def diff(before: Any, after: Any, path: Path | None = None) -> list[dict[str, Any]]:
    """Patches turning ``before`` into ``after`` (both JSON views)."""
    at: Path = [] if path is None else path
    if before == after and type(before) is type(after):
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[dict[str, Any]] = []
        for k in before:
            if k not in after:
                out.append({"action": "del", "path": [*at, k], "length": 1})
        for k, v in after.items():
            if k not in before:
                out.append({"action": "put", "path": [*at, k], "value": v})
            else:
                out += diff(before[k], v, [*at, k])
        return out
    if isinstance(before, list) and isinstance(after, list):
        return _seq(before, after, at, text=False)
    if isinstance(before, str) and isinstance(after, str) and at:
        return _seq(before, after, at, text=True)
    if not at:  # the root changed type (cannot happen for documents): replace everything
        return [{"action": "put", "path": [], "value": after}]
    return [{"action": "put", "path": at, "value": after}]


def _seq(before: Any, after: Any, at: Path, *, text: bool) -> list[dict[str, Any]]:
    n, m = len(before), len(after)
    lo = 0
    while lo < n and lo < m and before[lo] == after[lo] and type(before[lo]) is type(
            after[lo]):
        lo += 1
    hi = 0
    while (hi < n - lo and hi < m - lo and before[n - 1 - hi] == after[m - 1 - hi]
           and type(before[n - 1 - hi]) is type(after[m - 1 - hi])):
        hi += 1
    gone, new = before[lo:n - hi], after[lo:m - hi]
    out: list[dict[str, Any]] = []
    if not text and len(gone) == len(new):  # same length: element-wise (nested edits stay small)
        for i, (b, a) in enumerate(zip(gone, new, strict=True)):
            out += diff(b, a, [*at, lo + i])
        return out
    if gone:
        out.append({"action": "del", "path": [*at, lo], "length": len(gone)})
    if new:
        if text:
            out.append({"action": "splice", "path": [*at, lo], "value": new})
        else:
            out.append({"action": "insert", "path": [*at, lo], "values": list(new)})
    return out


def apply(view: Any, patches: list[dict[str, Any]]) -> Any:
    """Apply ``patches`` to a JSON view (a copy is returned; for apps and tests)."""
    import copy

    root = {"": copy.deepcopy(view)}
    for p in patches:
        keys: Path = ["", *p["path"]]
        parent: Any = root
        for k in keys[:-1]:
            parent = parent[k]
        last = keys[-1]
        action = p["action"]
        if action == "put":
            parent[last] = p["value"]
        elif action == "del":
            if isinstance(parent, dict):
                del parent[last]
            else:
                assert isinstance(last, int)
                holder, hkey = _holder(root, keys[:-1])
                if isinstance(parent, str):
                    holder[hkey] = parent[:last] + parent[last + p["length"]:]
                else:
                    del parent[last:last + p["length"]]
        elif action == "insert":
            assert isinstance(last, int)
            parent[last:last] = p["values"]
        elif action == "splice":
            assert isinstance(last, int)
            holder, hkey = _holder(root, keys[:-1])
            holder[hkey] = parent[:last] + p["value"] + parent[last:]
    return root[""]


def _holder(root: Any, keys: Path) -> tuple[Any, Any]:
    """The container holding the value at ``keys`` (strings are immutable: replaced there)."""
    node = root
    for k in keys[:-1]:
        node = node[k]
    return node, keys[-1]
