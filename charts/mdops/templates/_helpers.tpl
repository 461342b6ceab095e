{{/* The chart name, or nameOverride. */}}
{{- define "mdops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the objects: fullnameOverride, or the release name (plus the chart name unless the
release name contains it), cut at 63 characters (the DNS label limit of some name fields).
*/}}
{{- define "mdops.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "mdops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "mdops.labels" -}}
helm.sh/chart: {{ include "mdops.chart" . }}
{{ include "mdops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mdops
{{- end }}

{{/* Labels that select the controller's pods (immutable in a Deployment: never add to them). */}}
{{- define "mdops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mdops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mdops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mdops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest */}}
{{- define "mdops.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The runner's image: runner.image, falling back to the controller's. */}}
{{- define "mdops.runnerImage" -}}
{{- if or .Values.runner.image.repository .Values.runner.image.tag }}
{{- printf "%s:%s" (default .Values.image.repository .Values.runner.image.repository) (default (default .Chart.AppVersion .Values.image.tag) .Values.runner.image.tag) }}
{{- else }}
{{- include "mdops.image" . }}
{{- end }}
{{- end }}

{{- define "mdops.apiSecretName" -}}
{{- default (printf "%s-api-token" (include "mdops.fullname" .)) .Values.api.existingSecret }}
{{- end }}

{{- define "mdops.simulatorName" -}}
{{- printf "%s-sim" (include "mdops.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The environment shared by the controller and the API. */}}
{{- define "mdops.commonEnv" -}}
- name: MDOPS_IN_CLUSTER
  value: "true"
- name: MDOPS_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: MDOPS_TIMEZONE
  value: {{ .Values.calendar.timezone | quote }}
- name: MDOPS_VENUE
  value: {{ .Values.calendar.venue | quote }}
- name: MDOPS_PRE_OPEN_MINUTES
  value: {{ .Values.calendar.preOpenMinutes | quote }}
- name: MDOPS_SESSION_WINDOWS
  value: {{ .Values.calendar.sessionWindows | toJson | quote }}
{{- /* On the pod's /tmp (an emptyDir): a restarted container reads the table instead of building it. */}}
- name: MDOPS_CALENDAR_CACHE
  value: /tmp/mdops-sessions.json
{{- end }}
