{{/* The release's full name, at most 63 characters. */}}
{{- define "qwenfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "qwenfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "qwenfleet.labels" -}}
{{ include "qwenfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: qwenfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "qwenfleet.serviceAccountName" -}}
{{- default (include "qwenfleet.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "qwenfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Rules for namespaced objects: in a ClusterRole (all namespaces) or a Role per watched namespace. */}}
{{- define "qwenfleet.namespacedRules" -}}
# The two kinds qwenfleet serves: watched, annotated and finalized by the operator, status written by it.
- apiGroups: ["qwenfleet.dev"]
  resources: ["qwen3deployments", "qwen3routers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["qwenfleet.dev"]
  resources: ["qwen3deployments/status", "qwen3routers/status"]
  verbs: ["get", "patch"]
# Owner references with blockOwnerDeletion (clusters that enforce OwnerReferencesPermissionEnforcement).
- apiGroups: ["qwenfleet.dev"]
  resources: ["qwen3deployments/finalizers", "qwen3routers/finalizers"]
  verbs: ["update"]
# Events on the objects it reconciles; a repeat raises the count of the Event already posted.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Model-server pods: readiness and scheduling state for status and the builtin autoscaler.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Existence of the Hugging Face token Secret a deployment names (its value is never read into logs).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Children applied with server-side apply and watched so a deleted or edited child comes back.
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Children that are also removed when the spec stops calling for them (workload kind change, the caches of
# other checkpoints once a rollout is complete: only PVCs the operator created, never a user's).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["leaderworkerset.x-k8s.io"]
  resources: ["leaderworkersets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# A Qwen3Router with an Endpoint Picker: one InferencePool per backend (Gateway API Inference Extension).
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end -}}

{{/* Rules for cluster-scoped objects: always in a ClusterRole. */}}
{{- define "qwenfleet.clusterRules" -}}
# Which optional integrations exist (LeaderWorkerSet, KEDA, Prometheus Operator, Karpenter), watched by kopf
# so that one installed after the operator started is used (and its kind watched) from then on.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
# kopf looks the watched namespaces up (namespaced mode); without this it assumes they exist and warns.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
# One Karpenter NodePool per deployment that asks for one, removed by the finalizer or when the spec drops it;
# ours are watched (by label) like every other child.
- apiGroups: ["karpenter.sh"]
  resources: ["nodepools"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end -}}
