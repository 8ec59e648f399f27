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
