{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "streamlearn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name is shortened to 45 characters: "-dashboards" and the StatefulSet's pod
revision label still fit the 63-character limit. */}}
{{- define "streamlearn.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "streamlearn.worker.fullname" -}}
{{- printf "%s-worker" (include "streamlearn.fullname" .) }}
{{- end }}

{{- define "streamlearn.server.fullname" -}}
{{- printf "%s-server" (include "streamlearn.fullname" .) }}
{{- end }}

{{- define "streamlearn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ---------------------------------------------------------------------------- */}}

{{- define "streamlearn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamlearn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "streamlearn.labels" -}}
helm.sh/chart: {{ include "streamlearn.chart" . }}
{{ include "streamlearn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamlearn
{{- end }}

{{/* The Prometheus job label (ServiceMonitor jobLabel): the same job names as the compose
stack's scrape config, so the alert rules of deploy/prometheus work unchanged in both. */}}
{{- define "streamlearn.jobLabelKey" -}}streamlearn.io/job{{- end }}

{{/* Image and service account ---------------------------------------------------------- */}}

{{- define "streamlearn.server.image" -}}
{{- $repo := .Values.server.image.repository | default .Values.image.repository }}
{{- $tag := .Values.server.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "streamlearn.worker.image" -}}
{{- $repo := .Values.worker.image.repository | default .Values.image.repository }}
{{- $tag := .Values.worker.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "streamlearn.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "streamlearn.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Paths inside the containers ------------------------------------------------------- */}}
{{- define "streamlearn.configPath" -}}/etc/streamlearn/settings.yaml{{- end }}
{{- define "streamlearn.checkpointDir" -}}/var/lib/streamlearn/checkpoints{{- end }}
{{- define "streamlearn.registryDir" -}}/var/lib/streamlearn/registry{{- end }}
{{- define "streamlearn.kafkaTlsDir" -}}/etc/streamlearn/kafka-tls{{- end }}

{{/* The streamlearn settings (settings.yaml of the ConfigMap): what the chart derives from
its values, with .Values.settings merged over it. Secrets never appear here: they come from
existing Secrets as STREAMLEARN_* environment variables (streamlearn.secretEnv). */}}
{{- define "streamlearn.settings" -}}
{{- $v := .Values }}
{{- $kafka := dict "bootstrap_servers" $v.kafka.bootstrapServers "topic" $v.kafka.topic "group_id" $v.kafka.groupId "client" $v.kafka.client "security_protocol" $v.kafka.securityProtocol }}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol }}
{{- $_ := set $kafka "sasl_mechanism" $v.kafka.sasl.mechanism }}
{{- end }}
{{- if $v.kafka.tls.caSecret }}
{{- $_ := set $kafka "ssl_cafile" (printf "%s/%s" (include "streamlearn.kafkaTlsDir" .) $v.kafka.tls.caKey) }}
{{- end }}
{{- $registry := dict "kind" $v.registry.kind }}
{{- if eq $v.registry.kind "redis" }}
{{- $_ := set $registry "url" $v.redis.url }}
{{- else }}
{{- $_ := set $registry "path" (include "streamlearn.registryDir" .) }}
{{- end }}
{{- $derived := dict
  "kafka" $kafka
  "registry" $registry
  "checkpoint" (dict "dir" (include "streamlearn.checkpointDir" .))
  "serve" (dict "host" "0.0.0.0" "port" $v.server.port) }}
{{- if $v.worker.gpu.enabled }}
{{- $_ := set $derived "learner" (dict "device" "cuda") }}
{{- end }}
{{- toYaml (mustMergeOverwrite $derived (deepCopy $v.settings)) }}
{{- end }}

{{/* STREAMLEARN_* variables taken from existing Secrets (Kafka SASL, Redis). */}}
{{- define "streamlearn.secretEnv" -}}
{{- if and (hasPrefix "SASL" .Values.kafka.securityProtocol) .Values.kafka.sasl.existingSecret }}
- name: STREAMLEARN_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: STREAMLEARN_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if and (eq .Values.registry.kind "redis") .Values.redis.existingSecret }}
- name: STREAMLEARN_REGISTRY__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.passwordKey }}
{{- end }}
{{- end }}

{{/* Volumes both workloads share: settings, /tmp, the Kafka CA, the filesystem registry. */}}
{{- define "streamlearn.commonVolumes" -}}
- name: settings
  configMap:
    name: {{ include "streamlearn.fullname" .root }}-settings
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSizeLimit }}
{{- if .root.Values.kafka.tls.caSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .root.Values.kafka.tls.caSecret }}
{{- end }}
{{- if eq .root.Values.registry.kind "filesystem" }}
- name: registry
  persistentVolumeClaim:
    claimName: {{ .root.Values.registry.existingClaim }}
{{- end }}
{{- end }}

{{- define "streamlearn.commonVolumeMounts" -}}
- name: settings
  mountPath: /etc/streamlearn/settings.yaml
  subPath: settings.yaml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-tls
  mountPath: {{ include "streamlearn.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
{{- if eq .Values.registry.kind "filesystem" }}
- name: registry
  mountPath: {{ include "streamlearn.registryDir" . }}
{{- end }}
{{- end }}
