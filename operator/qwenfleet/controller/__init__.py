"""kopf handlers and the reconcile they call: thin shells over the pure cores."""
