{{- define "champion.fullname" -}}
{{- if contains "champion" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-champion-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "champion.serviceAccountName" -}}
{{- default (include "champion.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "champion.labels" -}}
app.kubernetes.io/name: champion-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "champion.selectorLabels" -}}
app.kubernetes.io/name: champion-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A name for cluster-scoped objects: the release's name and namespace, so that copies of the
chart in several namespaces of one cluster do not collide. */}}
{{- define "champion.clusterName" -}}
{{- printf "%s-%s" (include "champion.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{/* The namespaces the operator watches in namespaced mode: watchNamespaces, or the release
namespace when it is empty. Rendered as a comma-separated string. */}}
{{- define "champion.watchNamespaces" -}}
{{- $ns := .Values.watchNamespaces | default (list .Release.Namespace) | uniq -}}
{{- join "," $ns -}}
{{- end -}}

{{- define "champion.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}
