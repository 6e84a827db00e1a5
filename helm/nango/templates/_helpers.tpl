{{/* The five services, in the order they are rendered. */}}
{{- define "nango.services" -}}
server orchestrator jobs runner persist
{{- end }}

{{- define "nango.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nango.fullname" -}}
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

{{/* "<fullname>-<suffix>", at most 63 characters (a DNS label), the suffix always kept whole. */}}
{{- define "nango.componentName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $prefix := include "nango.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix }}
{{- end }}

{{- define "nango.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nango.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nango.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nango.labels" -}}
helm.sh/chart: {{ include "nango.chart" . }}
{{ include "nango.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nango
{{- end }}

{{/* Labels of one service's objects: (list $ "runner") */}}
{{- define "nango.componentLabels" -}}
{{ include "nango.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "nango.componentSelectorLabels" -}}
{{ include "nango.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "nango.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "nango.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nango.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret every pod reads its secret variables from. */}}
{{- define "nango.secretName" -}}
{{- default (include "nango.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The gRPC port of a service: (list $ "jobs") */}}
{{- define "nango.grpcPort" -}}
{{- $root := index . 0 }}
{{- $service := index . 1 }}
{{- if eq $service "server" }}
{{- $root.Values.server.grpcPort | int }}
{{- else }}
{{- (index $root.Values $service).port | int }}
{{- end }}
{{- end }}

{{/* The gRPC target other services use to reach a service: "<service>.<namespace>.svc:<port>". */}}
{{- define "nango.serviceUrl" -}}
{{- $root := index . 0 }}
{{- $service := index . 1 }}
{{- printf "%s.%s.svc:%s" (include "nango.componentName" (list $root $service)) $root.Release.Namespace (include "nango.grpcPort" .) }}
{{- end }}

{{- define "nango.runnerPodsServiceName" -}}
{{- include "nango.componentName" (list . "runner-pods") }}
{{- end }}

{{- define "nango.publicUrl" -}}
{{- if .Values.nango.publicUrl }}
{{- .Values.nango.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.api.host }}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) .Values.ingress.api.host }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "nango.componentName" (list . "server")) .Release.Namespace (.Values.server.httpPort | int) }}
{{- end }}
{{- end }}

{{- define "nango.connectUrl" -}}
{{- if .Values.server.connectUI.publicUrl }}
{{- .Values.server.connectUI.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.connectUI.host }}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) .Values.ingress.connectUI.host }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "nango.componentName" (list . "server")) .Release.Namespace (.Values.server.connectUI.port | int) }}
{{- end }}
{{- end }}

{{- define "nango.migrateAtStart" -}}
{{- if kindIs "invalid" .Values.migrations.atStart }}
{{- ternary "false" "true" .Values.migrations.job.enabled }}
{{- else }}
{{- ternary "true" "false" .Values.migrations.atStart }}
{{- end }}
{{- end }}

{{/* Whether a service may run more than one pod: (list $ "server") */}}
{{- define "nango.scalesOut" -}}
{{- $cfg := index (index . 0).Values (index . 1) }}
{{- if or (and $cfg.autoscaling.enabled (gt (int $cfg.autoscaling.maxReplicas) 1)) (and (not $cfg.autoscaling.enabled) (gt (int $cfg.replicas) 1)) }}true{{ end }}
{{- end }}

{{/* Seconds a pod gets between the kill decision and SIGKILL: (list $ "runner") */}}
{{- define "nango.terminationGracePeriodSeconds" -}}
{{- $root := index . 0 }}
{{- $cfg := index $root.Values (index . 1) }}
{{- $grace := $root.Values.nango.shutdownGraceSeconds | float64 | ceil | int }}
{{- $preStop := $root.Values.nango.preStopSleepSeconds | int }}
{{- if kindIs "invalid" $cfg.terminationGracePeriodSeconds }}
{{- add $preStop (mul 2 $grace) 10 }}
{{- else }}
{{- if le (int $cfg.terminationGracePeriodSeconds) (add $preStop $grace) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed nango.preStopSleepSeconds + nango.shutdownGraceSeconds (%d): the pod would be killed before in-flight calls finish" (index . 1) (int $cfg.terminationGracePeriodSeconds) (add $preStop $grace)) }}
{{- end }}
{{- $cfg.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/*
Variables held in the Secret, never in the ConfigMap. The Secret's keys are these names, so that an
existingSecret is written the same way.
*/}}
{{- define "nango.secretVariables" -}}
NANGO_ENCRYPTION_KEY NANGO_ENCRYPTION_PREVIOUS_KEYS NANGO_INTERNAL_TOKEN NANGO_DATABASE_URL NANGO_DB_PASSWORD ORCHESTRATOR_DATABASE_URL JOBS_DATABASE_URL RECORDS_DATABASE_URL NANGO_REDIS_URL NANGO_REDIS_AUTH AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN NANGO_SECRET_KEY_DEV NANGO_SECRET_KEY_PROD
{{- end }}

{{/*
Which secret variables each service reads (least privilege: the runner, which runs customer code,
gets no database or encryption key). A "!" suffix marks a variable the pod cannot start without.
*/}}
{{- define "nango.secretVariablesOf" -}}
{{- $db := "NANGO_DATABASE_URL NANGO_DB_PASSWORD" }}
{{- $redis := "NANGO_REDIS_URL NANGO_REDIS_AUTH" }}
{{- $aws := "AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN" }}
{{- $encryption := "NANGO_ENCRYPTION_KEY! NANGO_ENCRYPTION_PREVIOUS_KEYS" }}
{{- $token := "NANGO_INTERNAL_TOKEN!" }}
{{- $of := dict
  "server" (list $token $encryption $db $redis $aws "NANGO_SECRET_KEY_DEV NANGO_SECRET_KEY_PROD")
  "orchestrator" (list $token $db "ORCHESTRATOR_DATABASE_URL")
  "jobs" (list $token $db "JOBS_DATABASE_URL" $redis)
  "runner" (list $token $aws)
  "persist" (list $token $encryption $db "RECORDS_DATABASE_URL")
  "migrate" (list $db "ORCHESTRATOR_DATABASE_URL JOBS_DATABASE_URL RECORDS_DATABASE_URL")
}}
{{- join " " (index $of .) }}
{{- end }}

{{/* env entries reading a service's secret variables: (list $ "jobs" "<secret name>") */}}
{{- define "nango.secretEnv" -}}
{{- $secret := index . 2 }}
{{- range splitList " " (include "nango.secretVariablesOf" (index . 1)) }}
{{- $required := hasSuffix "!" . }}
- name: {{ trimSuffix "!" . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ trimSuffix "!" . }}
      {{- if not $required }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{/* Secret values from values.yaml, by variable name (empty ones left out). */}}
{{- define "nango.secretData" -}}
{{- $v := .Values }}
{{- $data := dict
  "NANGO_ENCRYPTION_KEY" $v.secrets.encryptionKey
  "NANGO_ENCRYPTION_PREVIOUS_KEYS" $v.secrets.previousEncryptionKeys
  "NANGO_INTERNAL_TOKEN" $v.secrets.internalToken
  "NANGO_SECRET_KEY_DEV" $v.secrets.secretKeyDev
  "NANGO_SECRET_KEY_PROD" $v.secrets.secretKeyProd
  "NANGO_DATABASE_URL" $v.postgres.url
  "NANGO_DB_PASSWORD" $v.postgres.password
  "ORCHESTRATOR_DATABASE_URL" $v.postgres.orchestratorUrl
  "JOBS_DATABASE_URL" $v.postgres.jobsUrl
  "RECORDS_DATABASE_URL" $v.postgres.recordsUrl
  "NANGO_REDIS_URL" $v.redis.url
  "NANGO_REDIS_AUTH" $v.redis.auth
  "AWS_ACCESS_KEY_ID" $v.s3.accessKeyId
  "AWS_SECRET_ACCESS_KEY" $v.s3.secretAccessKey
}}
{{- $out := dict }}
{{- range $key, $value := $data }}
{{- if $value }}
{{- $_ := set $out $key (toString $value) }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* Non-secret settings the chart derives from its values, by variable name. */}}
{{- define "nango.chartConfig" -}}
{{- $v := .Values }}
{{- $config := dict
  "NANGO_ENV" $v.nango.env
  "NANGO_DATA_DIR" "/var/lib/nango"
  "NANGO_BIND_HOST" $v.nango.bindHost
  "LOG_LEVEL" $v.nango.logLevel
  "NANGO_LOG_FORMAT" $v.nango.logFormat
  "NANGO_SHUTDOWN_GRACE_SECONDS" (toString $v.nango.shutdownGraceSeconds)
  "NANGO_MIGRATE_AT_START" (include "nango.migrateAtStart" .)
  "NANGO_SERVER_URL" (include "nango.publicUrl" .)
  "SERVER_PORT" (toString $v.server.httpPort)
  "NANGO_SERVER_GRPC_PORT" (toString $v.server.grpcPort)
  "NANGO_ORCHESTRATOR_PORT" (toString $v.orchestrator.port)
  "NANGO_JOBS_PORT" (toString $v.jobs.port)
  "NANGO_RUNNER_PORT" (toString $v.runner.port)
  "NANGO_PERSIST_PORT" (toString $v.persist.port)
  "SERVER_SERVICE_URL" (include "nango.serviceUrl" (list . "server"))
  "ORCHESTRATOR_SERVICE_URL" (include "nango.serviceUrl" (list . "orchestrator"))
  "JOBS_SERVICE_URL" (include "nango.serviceUrl" (list . "jobs"))
  "RUNNER_SERVICE_URL" (include "nango.serviceUrl" (list . "runner"))
  "PERSIST_SERVICE_URL" (include "nango.serviceUrl" (list . "persist"))
  "FLAG_SERVE_CONNECT_UI" (ternary "true" "false" $v.server.connectUI.enabled)
  "NANGO_CONNECT_UI_PORT" (toString $v.server.connectUI.port)
  "NANGO_PUBLIC_CONNECT_URL" (include "nango.connectUrl" .)
  "NANGO_DB_SCHEMA" $v.postgres.schema
}}
{{- if $v.postgres.host }}
{{- $_ := set $config "NANGO_DB_HOST" $v.postgres.host }}
{{- $_ := set $config "NANGO_DB_PORT" (toString $v.postgres.port) }}
{{- $_ := set $config "NANGO_DB_USER" $v.postgres.user }}
{{- $_ := set $config "NANGO_DB_NAME" $v.postgres.database }}
{{- $_ := set $config "NANGO_DB_SSL" (ternary "true" "false" $v.postgres.ssl) }}
{{- end }}
{{- if $v.redis.host }}
{{- $_ := set $config "NANGO_REDIS_HOST" $v.redis.host }}
{{- $_ := set $config "NANGO_REDIS_PORT" (toString $v.redis.port) }}
{{- if $v.redis.username }}
{{- $_ := set $config "NANGO_REDIS_USERNAME" $v.redis.username }}
{{- end }}
{{- end }}
{{- if $v.s3.bucket }}
{{- $_ := set $config "AWS_BUCKET_NAME" $v.s3.bucket }}
{{- end }}
{{- if $v.s3.region }}
{{- $_ := set $config "AWS_REGION" $v.s3.region }}
{{- end }}
{{- if $v.s3.endpoint }}
{{- $_ := set $config "AWS_ENDPOINT_URL_S3" $v.s3.endpoint }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{- define "nango.configData" -}}
{{- $config := fromYaml (include "nango.chartConfig" .) }}
{{- range $key, $value := .Values.nango.config }}
{{- $_ := set $config $key (toString $value) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
Everything that must hold before anything is rendered; each failure names the value to set.
*/}}
{{- define "nango.validate" -}}
{{- $v := .Values }}
{{- $secretVariables := splitList " " (include "nango.secretVariables" .) }}
{{- range $key, $_ := $v.nango.config }}
{{- if or (has $key $secretVariables) (regexMatch "(?i)(PASSWORD|SECRET|TOKEN|ENCRYPTION_KEY|_AUTH$|DATABASE_URL|REDIS_URL)" $key) }}
{{- fail (printf "nango.config.%s looks like a secret and would be stored in a ConfigMap: set it under `secrets`, `postgres`, `redis` or `s3`, or in secrets.existingSecret" $key) }}
{{- end }}
{{- if hasKey (fromYaml (include "nango.chartConfig" $)) $key }}
{{- fail (printf "nango.config.%s is derived by the chart from its own values (ports, URLs, database, Redis, S3, logging): set the matching value in values.yaml instead, so that Services, probes and the other pods agree" $key) }}
{{- end }}
{{- end }}
{{- if $v.secrets.existingSecret }}
{{- $inline := fromYaml (include "nango.secretData" .) }}
{{- if $inline }}
{{- fail (printf "secrets.existingSecret is set, so these values would be ignored: put %s in the Secret %q instead and leave them empty here" (join ", " (keys $inline | sortAlpha)) $v.secrets.existingSecret) }}
{{- end }}
{{- else }}
{{- $_ := required "secrets.encryptionKey is required (NANGO_ENCRYPTION_KEY: generate one with `openssl rand -base64 32`), or set secrets.existingSecret to a Secret that holds it" $v.secrets.encryptionKey }}
{{- if ne (len (b64dec $v.secrets.encryptionKey)) 32 }}
{{- fail "secrets.encryptionKey must be base64 of exactly 32 bytes (generate one with `openssl rand -base64 32`)" }}
{{- end }}
{{- $_ := required "secrets.internalToken is required (NANGO_INTERNAL_TOKEN, the shared token of internal gRPC calls: generate one with `openssl rand -hex 32`), or set secrets.existingSecret to a Secret that holds it" $v.secrets.internalToken }}
{{- if lt (len $v.secrets.internalToken) 16 }}
{{- fail "secrets.internalToken must be at least 16 characters (generate one with `openssl rand -hex 32`)" }}
{{- end }}
{{- if not (or $v.postgres.url $v.postgres.host) }}
{{- fail "postgres.url or postgres.host is required: the services need an external Postgres (or set secrets.existingSecret to a Secret holding NANGO_DATABASE_URL)" }}
{{- end }}
{{- end }}
{{- if and $v.postgres.url $v.postgres.host }}
{{- fail "set postgres.url or postgres.host, not both" }}
{{- end }}
{{- if not $v.s3.bucket }}
{{- fail "s3.bucket is required: the server stores function bundles that the runner pods read, which no local folder can share across pods (s3.endpoint points at an S3-compatible server such as MinIO)" }}
{{- end }}
{{- if and (or (include "nango.scalesOut" (list . "server")) (include "nango.scalesOut" (list . "jobs"))) (not (or $v.redis.url $v.redis.host $v.secrets.existingSecret)) }}
{{- fail "redis.url or redis.host is required when the server or jobs may run more than one replica: locks, rate limits and pub/sub must be shared between replicas" }}
{{- end }}
{{- if not (has $v.runner.advertiseAddress (list "podIP" "podDNS")) }}
{{- fail (printf "runner.advertiseAddress must be podIP or podDNS, not %q" $v.runner.advertiseAddress) }}
{{- end }}
{{- if and $v.ingress.enabled $v.ingress.connectUI.host (not $v.server.connectUI.enabled) }}
{{- fail "ingress.connectUI.host is set but server.connectUI.enabled is false: enable Connect UI or remove the host" }}
{{- end }}
{{- range splitList " " (include "nango.services" .) }}
{{- $_ := include "nango.terminationGracePeriodSeconds" (list $ .) }}
{{- end }}
{{- end }}
