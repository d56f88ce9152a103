{{/* Names, labels and shared snippets. */}}

{{- define "msa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "msa.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "msa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "msa.labels" -}}
helm.sh/chart: {{ include "msa.chart" . }}
app.kubernetes.io/name: {{ include "msa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: mlflow-secrets-auth
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "operator"). */}}
{{- define "msa.selectorLabels" -}}
app.kubernetes.io/name: {{ include "msa.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "msa.componentLabels" -}}
{{ include "msa.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "msa.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "msa.operator.fullname" -}}
{{- printf "%s-operator" (include "msa.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "msa.webhook.fullname" -}}
{{- printf "%s-webhook" (include "msa.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "msa.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "msa.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "msa.webhook.serviceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create }}
{{- default (include "msa.webhook.fullname" .) .Values.webhook.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.webhook.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "msa.webhook.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- required "tls.secret.name is required when tls.mode is secret" .Values.tls.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "msa.webhook.fullname" .) }}
{{- end }}
{{- end }}

{{/* The one name shared by the MutatingWebhookConfiguration, the webhook's env and cert-manager. */}}
{{- define "msa.webhook.configName" -}}
{{- include "msa.fullname" . }}
{{- end }}

{{/* DNS names of the webhook Service, for the serving certificate. */}}
{{- define "msa.webhook.dnsNames" -}}
{{- $svc := include "msa.webhook.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/* kopf peering name: empty (standalone) for one operator replica, else the release's name. */}}
{{- define "msa.operator.peering" -}}
{{- if gt (int .Values.operator.replicas) 1 }}
{{- include "msa.operator.fullname" . }}
{{- end }}
{{- end }}
