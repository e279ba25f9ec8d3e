"""Label selectors (Kubernetes-style matchLabels / matchExpressions) on plain label dicts.

Lives in pipelines so the manifest checker can warn about a rollout selector that matches no
device without importing the fleet package (imports flow left to right); the fleet may reuse it.
"""

from __future__ import annotations

from typing import Mapping


def matches(selector: Mapping | None, labels: Mapping | None) -> bool:
    """True when `labels` satisfy every matchLabels pair and every matchExpressions rule.

    An empty or absent selector matches everything.
    """
    labels = {str(k): str(v) for k, v in (labels or {}).items()}
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(str(key)) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key = str(expr.get("key"))
        op = expr.get("operator")
        values = {str(v) for v in (expr.get("values") or [])}
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
