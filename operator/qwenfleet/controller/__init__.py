"""The operator: watches, work queue and the reconcile they drive: thin shells over the pure cores."""

import qwenfleet.kube  # noqa: F401  (first: kubernetes_asyncio's generated classes load lazily, see kube.lazyclient)
