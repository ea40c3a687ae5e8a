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

{{/* Secrets ------------------------------------------------------------------------------
Every credential reaches streamlearn as a STREAMLEARN_* variable from a Secret: an existing one
(the existingSecret values) or the one the chart creates from the password values
(streamlearn.credentialsSecret), never through the ConfigMap. */}}
{{- define "streamlearn.credentialsSecret" -}}
{{- printf "%s-credentials" (include "streamlearn.fullname" .) }}
{{- end }}

{{/* The credentials the chart's own Secret holds: key -> value (empty: no Secret). */}}
{{- define "streamlearn.credentials" -}}
{{- $v := .Values }}
{{- $c := dict }}
{{- if and (hasPrefix "SASL" $v.kafka.securityProtocol) (not $v.kafka.sasl.existingSecret) $v.kafka.sasl.password }}
{{- $_ := set $c "kafka-sasl-username" $v.kafka.sasl.username }}
{{- $_ := set $c "kafka-sasl-password" $v.kafka.sasl.password }}
{{- end }}
{{- if and (eq $v.registry.kind "redis") (not $v.redis.existingSecret) $v.redis.password }}
{{- $_ := set $c "redis-password" $v.redis.password }}
{{- end }}
{{- if and $v.server.enabled (not $v.server.adminToken.existingSecret) $v.server.adminToken.value }}
{{- $_ := set $c "admin-token" $v.server.adminToken.value }}
{{- end }}
{{- if $c }}{{ toJson $c }}{{ end }}
{{- end }}

{{/* Values that would be ignored or leak are refused here too (for installs that skip the
schema with --skip-schema-validation). */}}
{{- define "streamlearn.checkSecrets" -}}
{{- $v := .Values }}
{{- if and $v.kafka.sasl.existingSecret $v.kafka.sasl.password }}
{{- fail "kafka.sasl.existingSecret and kafka.sasl.password are both set: keep one" }}
{{- end }}
{{- if and $v.redis.existingSecret $v.redis.password }}
{{- fail "redis.existingSecret and redis.password are both set: keep one" }}
{{- end }}
{{- if and $v.server.adminToken.existingSecret $v.server.adminToken.value }}
{{- fail "server.adminToken.existingSecret and server.adminToken.value are both set: keep one" }}
{{- end }}
{{- range $path := list "kafka.sasl_password" "kafka.ssl_key_password" "registry.password" "serve.admin_token" }}
{{- $parts := splitList "." $path }}
{{- if hasKey (get $v.settings (first $parts) | default dict) (last $parts) }}
{{- fail (printf "settings.%s is a secret and would land in the ConfigMap: give it through a Secret (see the chart README, \"Secrets\")" $path) }}
{{- end }}
{{- end }}
{{- end }}

{{/* secretKeyRef env entries: NAME SECRET KEY */}}
{{- define "streamlearn.secretRef" -}}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 }}
      key: {{ index . 2 }}
{{- end }}

{{/* STREAMLEARN_* variables of both workloads (Kafka SASL, Redis); the server adds its admin
token (streamlearn.serverSecretEnv). */}}
{{- define "streamlearn.secretEnv" -}}
{{- $v := .Values }}
{{- $own := include "streamlearn.credentialsSecret" . }}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol }}
{{- if $v.kafka.sasl.existingSecret }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_KAFKA__SASL_USERNAME" $v.kafka.sasl.existingSecret $v.kafka.sasl.usernameKey) | nindent 0 }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_KAFKA__SASL_PASSWORD" $v.kafka.sasl.existingSecret $v.kafka.sasl.passwordKey) | nindent 0 }}
{{- else if $v.kafka.sasl.password }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_KAFKA__SASL_USERNAME" $own "kafka-sasl-username") | nindent 0 }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_KAFKA__SASL_PASSWORD" $own "kafka-sasl-password") | nindent 0 }}
{{- end }}
{{- end }}
{{- if eq $v.registry.kind "redis" }}
{{- if $v.redis.existingSecret }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_REGISTRY__PASSWORD" $v.redis.existingSecret $v.redis.passwordKey) | nindent 0 }}
{{- else if $v.redis.password }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_REGISTRY__PASSWORD" $own "redis-password") | nindent 0 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "streamlearn.serverSecretEnv" -}}
{{- $a := .Values.server.adminToken }}
{{- include "streamlearn.secretEnv" . }}
{{- if $a.existingSecret }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_SERVE__ADMIN_TOKEN" $a.existingSecret $a.key) | nindent 0 }}
{{- else if $a.value }}
{{- include "streamlearn.secretRef" (list "STREAMLEARN_SERVE__ADMIN_TOKEN" (include "streamlearn.credentialsSecret" .) "admin-token") | nindent 0 }}
{{- end }}
{{- end }}

{{/* Monitoring ---------------------------------------------------------------------------
ServiceMonitor and PrometheusRule only where their API exists (or when forced), so the chart
installs on a cluster without the Prometheus Operator CRDs. */}}
{{- define "streamlearn.monitoringApi" -}}
{{- if or .Values.metrics.forceMonitoringResources (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{/* The worker is scraped: deployed, running and serving metrics. */}}
{{- define "streamlearn.workerScraped" -}}
{{- $w := .Values.worker }}
{{- if and $w.enabled $w.metrics.enabled (gt (int $w.replicas) 0) }}true{{ end }}
{{- end }}

{{/* Worker ranks ------------------------------------------------------------------------ */}}

{{/* MASTER_ADDR: pod 0's name in the headless Service (published before it is Ready). */}}
{{- define "streamlearn.worker.masterAddr" -}}
{{- $sts := include "streamlearn.worker.fullname" . }}
{{- printf "%s-0.%s.%s.svc" $sts $sts .Release.Namespace }}
{{- end }}

{{/* The shell the worker container starts: RANK from the pod name's ordinal, then exec the
image's entrypoint with the container's args. */}}
{{- define "streamlearn.rankWrapper" -}}
RANK="${POD_NAME##*-}"; case "$RANK" in ''|*[!0-9]*) echo "no ordinal in pod name '$POD_NAME': cannot set RANK" >&2; exit 64;; esac; export RANK; exec streamlearn "$@"
{{- end }}

{{/* The one checkpoint claim every rank mounts. */}}
{{- define "streamlearn.worker.checkpointClaim" -}}
{{- .Values.worker.persistence.existingClaim | default (printf "%s-checkpoints" (include "streamlearn.worker.fullname" .)) }}
{{- end }}

{{/* Several ranks share one checkpoint directory: refused without a volume every rank can
mount read-write (also for installs that skip the schema). */}}
{{- define "streamlearn.checkWorker" -}}
{{- $w := .Values.worker }}
{{- if gt (int $w.replicas) 1 }}
{{- if not $w.persistence.enabled }}
{{- fail (printf "worker.replicas=%d needs worker.persistence.enabled: the ranks share one checkpoint volume (ReadWriteMany)" (int $w.replicas)) }}
{{- end }}
{{- if and (not $w.persistence.existingClaim) (not (has "ReadWriteMany" $w.persistence.accessModes)) }}
{{- fail (printf "worker.replicas=%d needs worker.persistence.accessModes [ReadWriteMany] (or an existing ReadWriteMany claim in worker.persistence.existingClaim): every rank mounts the one checkpoint volume" (int $w.replicas)) }}
{{- end }}
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
