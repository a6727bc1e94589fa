{{- define "whittle.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "whittle.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "whittle.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "whittle.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "whittle.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* The operator's --report-key-secret default (src/cli/operator.rs). */ -}}
{{- define "whittle.reportKeySecret" -}}
whittle-report-key
{{- end -}}

{{- /* The label whittle puts on the pods it instruments (WORKFLOW_LABEL in src/api/names.rs). */ -}}
{{- define "whittle.workflowLabel" -}}
whittle.dev/workflow
{{- end -}}

{{- /* The operator's ServiceAccount, as the subject of a binding. */ -}}
{{- define "whittle.subjects" -}}
- kind: ServiceAccount
  name: {{ include "whittle.serviceAccount" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
