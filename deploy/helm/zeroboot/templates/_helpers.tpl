{{- define "zeroboot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "zeroboot.labels" -}}
app.kubernetes.io/name: zeroboot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "zeroboot.selector" -}}
app.kubernetes.io/name: zeroboot
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "zeroboot.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "zeroboot.keysSecret" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{ .Values.apiKeys.existingSecret }}
{{- else -}}
{{ include "zeroboot.fullname" . }}-api-keys
{{- end -}}
{{- end -}}

{{- define "zeroboot.authOn" -}}
{{- if or .Values.apiKeys.existingSecret .Values.apiKeys.keys -}}true{{- end -}}
{{- end -}}

{{- define "zeroboot.nodesService" -}}
{{ include "zeroboot.fullname" . }}-nodes
{{- end -}}
