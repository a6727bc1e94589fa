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

{{- /* The operator's per-harden --spool-limit in bytes: spool.sizeLimit shared among the
`concurrency` hardens that may fill their spools at once, a tenth kept free, so a large image
fails with LimitExceeded instead of the kubelet evicting the operator for exceeding the
emptyDir. Empty when spool.sizeLimit is (the operator's default applies). */ -}}
{{- define "whittle.spoolLimit" -}}
{{- $q := toString .Values.spool.sizeLimit -}}
{{- if $q -}}
{{- $digits := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $digits $q -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (not $digits) (not (hasKey $units $unit)) -}}
{{- fail (printf "spool.sizeLimit %q: write a whole number of bytes, optionally with k, M, G, T, Ki, Mi, Gi or Ti (e.g. 2Gi)" $q) -}}
{{- end -}}
{{- $concurrency := max 1 (int64 .Values.concurrency) -}}
{{- div (mul (int64 $digits) (get $units $unit) 9) (mul 10 $concurrency) -}}
{{- end -}}
{{- end -}}
