{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "gatehouse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources: <release>-gatehouse unless the release already says it. */}}
{{- define "gatehouse.fullname" -}}
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

{{- define "gatehouse.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels the chart itself puts on every object; commonLabels may not redefine them. */}}
{{- define "gatehouse.chartLabels" -}}
helm.sh/chart: {{ include "gatehouse.chart" . }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gatehouse
{{- end }}

{{/* Labels every object carries: the chart's own and commonLabels. */}}
{{- define "gatehouse.labels" -}}
{{ include "gatehouse.chartLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the gateway pods; never change them in an upgrade (selectors are immutable). */}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "gatehouse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gatehouse.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest pins the image. */}}
{{- define "gatehouse.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Deployment always runs more than one pod, so a PodDisruptionBudget cannot block a node drain
(with a single pod, minAvailable: 1 would).
*/}}
{{- define "gatehouse.multiReplica" -}}
{{- if eq .Values.kind "Deployment" }}
{{- $replicas := ternary .Values.autoscaling.minReplicas .Values.replicas .Values.autoscaling.enabled }}
{{- if gt (int $replicas) 1 }}true{{ end }}
{{- end }}
{{- end }}

{{/* "true" when the chart renders the client Service: service.enabled, or by default with a Deployment. */}}
{{- define "gatehouse.serviceEnabled" -}}
{{- if kindIs "invalid" .Values.service.enabled }}
{{- if eq .Values.kind "Deployment" }}true{{ end }}
{{- else if .Values.service.enabled }}true{{ end }}
{{- end }}

{{/* "true" when the gateway publishes the chart's Service in Ingress status (--publish-service). */}}
{{- define "gatehouse.publishService" -}}
{{- if kindIs "invalid" .Values.publishService.enabled }}
{{- if and (include "gatehouse.serviceEnabled" .) (not .Values.publishAddress) }}true{{ end }}
{{- else if .Values.publishService.enabled }}true{{ end }}
{{- end }}

{{/*
"true" when the gateway reads Nodes: a published NodePort Service's Ingress status carries the
nodes' addresses.
*/}}
{{- define "gatehouse.readsNodes" -}}
{{- if and (include "gatehouse.publishService" .) (eq .Values.service.type "NodePort") }}true{{ end }}
{{- end }}

{{/* admin.listenAddress, or every pod address; with hostNetwork only the node's own (POD_IP). */}}
{{- define "gatehouse.adminListenAddress" -}}
{{- if .Values.admin.listenAddress }}
{{- .Values.admin.listenAddress }}
{{- else if .Values.hostNetwork }}
{{- "$(POD_IP)" }}
{{- else }}
{{- "0.0.0.0" }}
{{- end }}
{{- end }}

{{- define "gatehouse.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (printf "%s-leader" (include "gatehouse.fullname" .)) }}
{{- end }}

{{/* Seconds of a lifecycle.preStop.sleep the admin added (0 if none). */}}
{{- define "gatehouse.preStopSleep" -}}
{{- $preStop := .Values.lifecycle.preStop | default dict }}
{{- $sleep := $preStop.sleep | default dict }}
{{- int ($sleep.seconds | default 0) }}
{{- end }}

{{/* Time a terminating pod needs: preStop sleep, then the in-process delay, then the drain. */}}
{{- define "gatehouse.shutdownSeconds" -}}
{{- add (include "gatehouse.preStopSleep" .) .Values.shutdownDelaySeconds .Values.drainTimeoutSeconds }}
{{- end }}

{{/* terminationGracePeriodSeconds: the value, or the shutdown time plus a 5 s margin. */}}
{{- define "gatehouse.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (include "gatehouse.shutdownSeconds" .) 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Where acme.caBundle is mounted, and the file the gateway reads. */}}
{{- define "gatehouse.acmeCaDir" -}}/etc/gatehouse/acme-ca{{- end }}
{{- define "gatehouse.acmeCaBundle" -}}
{{- if or .Values.acme.caBundle.configMapName .Values.acme.caBundle.secretName }}
{{- printf "%s/ca.crt" (include "gatehouse.acmeCaDir" .) }}
{{- end }}
{{- end }}

{{/*
A probe from the values (merged over the chart's default by Helm). A tcpSocket, exec or grpc
handler replaces the default httpGet (so `livenessProbe: {exec: ...}` just works).
*/}}
{{- define "gatehouse.probe" -}}
{{- $name := index . 0 }}
{{- $probe := deepCopy (index . 1) }}
{{- $others := list }}
{{- range $handler := list "tcpSocket" "exec" "grpc" }}
{{- if index $probe $handler }}{{ $others = append $others $handler }}{{ end }}
{{- end }}
{{- if $others }}
{{- $_ := unset $probe "httpGet" }}
{{- end }}
{{- if gt (len $others) 1 }}
{{- fail (printf "%s has several handlers (%s): give one of httpGet, tcpSocket, exec or grpc" $name (join ", " $others)) }}
{{- end }}
{{- if not (or $others $probe.httpGet) }}
{{- fail (printf "%s has no handler: give one of httpGet, tcpSocket, exec or grpc (or set %s: null to drop the probe)" $name $name) }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Combinations the JSON schema cannot explain well: fail with a message that names the fix.
*/}}
{{- define "gatehouse.validateValues" -}}
{{- if and .Values.autoscaling.enabled (ne .Values.kind "Deployment") }}
{{- fail "autoscaling.enabled needs kind: Deployment (a DaemonSet runs one pod per node)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.acme.enabled (not .Values.acme.email) }}
{{- fail "acme.enabled needs acme.email (the ACME account contact address)" }}
{{- end }}
{{- if and .Values.acme.caBundle.configMapName .Values.acme.caBundle.secretName }}
{{- fail "acme.caBundle: set configMapName or secretName, not both" }}
{{- end }}
{{- if and (include "gatehouse.acmeCaBundle" .) (not .Values.acme.enabled) }}
{{- fail "acme.caBundle needs acme.enabled (the bundle is only used to reach the ACME directory)" }}
{{- end }}
{{- if and (ne .Values.service.type "NodePort") (ne .Values.service.type "LoadBalancer") (or .Values.service.nodePorts.http .Values.service.nodePorts.https) }}
{{- fail "service.nodePorts needs service.type NodePort or LoadBalancer" }}
{{- end }}
{{- if ne .Values.service.type "LoadBalancer" }}
{{- range $key := list "loadBalancerIP" "loadBalancerSourceRanges" "loadBalancerClass" }}
{{- if index $.Values.service $key }}
{{- fail (printf "service.%s needs service.type LoadBalancer" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq .Values.service.type "ClusterIP") .Values.service.externalTrafficPolicy }}
{{- fail "service.externalTrafficPolicy needs service.type NodePort or LoadBalancer" }}
{{- end }}
{{- if and (eq (toString .Values.publishService.enabled) "true") (not (include "gatehouse.serviceEnabled" .)) }}
{{- fail "publishService.enabled needs the Service: set service.enabled: true, or publish addresses with publishAddress" }}
{{- end }}
{{- if and (include "gatehouse.publishService" .) .Values.publishAddress }}
{{- fail "publishAddress replaces the Service's address in Ingress status: set publishService.enabled: false (or leave it null) to use it" }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- if ge (int .Values.leaderElection.renewIntervalSeconds) (int .Values.leaderElection.leaseDurationSeconds) }}
{{- fail "leaderElection.renewIntervalSeconds must be less than leaderElection.leaseDurationSeconds" }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.terminationGracePeriodSeconds)) (lt (int .Values.terminationGracePeriodSeconds) (int (include "gatehouse.shutdownSeconds" .))) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must cover the shutdown: lifecycle.preStop.sleep + shutdownDelaySeconds + drainTimeoutSeconds = %s (leave it null to have it computed)" .Values.terminationGracePeriodSeconds (include "gatehouse.shutdownSeconds" .)) }}
{{- end }}
{{- $reserved := include "gatehouse.chartLabels" . | fromYaml }}
{{- range $values := list "commonLabels" "podLabels" }}
{{- range $key, $_ := index $.Values $values }}
{{- if hasKey $reserved $key }}
{{- fail (printf "%s: %q is set by the chart itself (it selects the pods or names the release)" $values $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.staticVolumes }}
{{- if hasKey $seen .name }}
{{- fail (printf "staticVolumes: name %q is used twice" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- end }}

{{/* The gateway's command line. A flag given twice takes its last value, so extraArgs (last) win. */}}
{{- define "gatehouse.args" -}}
- {{ printf "--http-listen=%s:%d" .Values.listenAddress (int .Values.containerPorts.http) | quote }}
- {{ printf "--https-listen=%s:%d" .Values.listenAddress (int .Values.containerPorts.https) | quote }}
- {{ printf "--admin-listen=%s:%d" (include "gatehouse.adminListenAddress" .) (int .Values.containerPorts.admin) | quote }}
- {{ printf "--ingress-class=%s" .Values.ingressClass.name | quote }}
- "--controller-name=gatehouse.dev/ingress-controller"
{{- if include "gatehouse.publishService" . }}
- {{ printf "--publish-service=%s/%s" .Release.Namespace (include "gatehouse.fullname" .) | quote }}
{{- end }}
{{- with .Values.publishAddress }}
- {{ printf "--publish-address=%s" (join "," .) | quote }}
{{- end }}
{{- range .Values.watchNamespaces }}
- {{ printf "--watch-namespace=%s" . | quote }}
{{- end }}
{{- if .Values.watchIngressWithoutClass }}
- "--watch-ingress-without-class"
{{- end }}
{{- if .Values.acme.enabled }}
- {{ printf "--acme-email=%s" .Values.acme.email | quote }}
- {{ printf "--acme-directory=%s" .Values.acme.directory | quote }}
- {{ printf "--acme-challenge=%s" .Values.acme.challenge | quote }}
{{- with include "gatehouse.acmeCaBundle" . }}
- {{ printf "--acme-ca-bundle=%s" . | quote }}
{{- end }}
{{- end }}
{{- if .Values.defaultCertificate }}
- {{ printf "--default-certificate=%s" .Values.defaultCertificate | quote }}
{{- end }}
- {{ printf "--lease-name=%s" (include "gatehouse.leaseName" .) | quote }}
- {{ printf "--lease-duration=%ds" (int .Values.leaderElection.leaseDurationSeconds) | quote }}
- {{ printf "--lease-renew=%ds" (int .Values.leaderElection.renewIntervalSeconds) | quote }}
- {{ printf "--shutdown-delay=%ds" (int .Values.shutdownDelaySeconds) | quote }}
- {{ printf "--drain-timeout=%ds" (int .Values.drainTimeoutSeconds) | quote }}
- {{ printf "--log-format=%s" .Values.logFormat | quote }}
{{- with .Values.tracing.otlpEndpoint }}
- {{ printf "--otlp-endpoint=%s" . | quote }}
- {{ printf "--trace-sample-ratio=%v" $.Values.tracing.sampleRatio | quote }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
What the gateway needs in every namespace whose Ingresses it serves: read its inputs (Secrets
only there: an Ingress can reference a Secret of its own namespace only; an auth-secret naming
NAMESPACE/NAME works only where this grants reading), publish Ingress status, report Events on Ingresses, and with ACME write the certificate Secrets named by
Ingresses (names unknown ahead, so not narrowed by resourceNames; the gateway overwrites only
Secrets it created, and never deletes one). Secrets are readable whole because Ingresses name
them (spec.tls secretName, the auth-secret annotation): the gateway itself narrows what it reads
to the kubernetes.io/tls Secrets, the others' metadata only, and a get of each auth-secret.
*/}}
{{- define "gatehouse.servedNamespaceRules" -}}
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses/status"]
  verbs: ["update", "patch"]
- apiGroups: [""]
  resources: ["services", "secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["gatehouse.dev"]
  resources: ["staticsites"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.acme.enabled }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "update", "patch"]
{{- end }}
{{- end }}

{{/* Pod template shared by the Deployment and the DaemonSet. */}}
{{- define "gatehouse.podTemplate" -}}
{{- $hostPorts := and (eq .Values.kind "DaemonSet") (not .Values.hostNetwork) -}}
metadata:
  labels:
    {{- /* podLabels win over commonLabels on the pods; neither may redefine the chart's own. */}}
    {{- merge (deepCopy .Values.podLabels) (include "gatehouse.labels" . | fromYaml) | toYaml | nindent 4 }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "gatehouse.serviceAccountName" . }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- if .Values.hostNetwork }}
  hostNetwork: true
  {{- end }}
  {{- if .Values.dnsPolicy }}
  dnsPolicy: {{ .Values.dnsPolicy }}
  {{- else if .Values.hostNetwork }}
  # Host-network pods would otherwise resolve with the node's resolver, not cluster DNS.
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  terminationGracePeriodSeconds: {{ include "gatehouse.terminationGracePeriodSeconds" . }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.initContainers }}
  initContainers:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: gatehouse
      image: {{ include "gatehouse.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        {{- include "gatehouse.args" . | nindent 8 }}
      env:
        # Leader election identity (coordination.k8s.io Lease holder) and own namespace.
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        # The pod's address (the node's with hostNetwork): admin.listenAddress may say $(POD_IP).
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .Values.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.containerPorts.http }}
          protocol: TCP
          {{- if $hostPorts }}
          hostPort: {{ .Values.daemonset.hostPorts.http }}
          {{- end }}
        - name: https
          containerPort: {{ .Values.containerPorts.https }}
          protocol: TCP
          {{- if $hostPorts }}
          hostPort: {{ .Values.daemonset.hostPorts.https }}
          {{- end }}
        - name: admin
          containerPort: {{ .Values.containerPorts.admin }}
          protocol: TCP
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- include "gatehouse.probe" (list "livenessProbe" .) | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- include "gatehouse.probe" (list "readinessProbe" .) | nindent 8 }}
      {{- end }}
      {{- with .Values.startupProbe }}
      startupProbe:
        {{- include "gatehouse.probe" (list "startupProbe" .) | nindent 8 }}
      {{- end }}
      {{- with .Values.lifecycle }}
      lifecycle:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      {{- with .Values.containerSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: state
          mountPath: /var/run/gatehouse
        - name: tmp
          mountPath: /tmp
        {{- if include "gatehouse.acmeCaBundle" . }}
        - name: acme-ca-bundle
          mountPath: {{ include "gatehouse.acmeCaDir" . }}
          readOnly: true
        {{- end }}
        {{- range .Values.staticVolumes }}
        - name: static-{{ .name }}
          mountPath: {{ .mountPath }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- with .Values.extraContainers }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  volumes:
    - name: state
      emptyDir:
        sizeLimit: 64Mi
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with .Values.acme.caBundle }}
    {{- if .configMapName }}
    - name: acme-ca-bundle
      configMap:
        name: {{ .configMapName }}
        items:
          - key: {{ .key }}
            path: ca.crt
    {{- else if .secretName }}
    - name: acme-ca-bundle
      secret:
        secretName: {{ .secretName }}
        items:
          - key: {{ .key }}
            path: ca.crt
    {{- end }}
    {{- end }}
    {{- range .Values.staticVolumes }}
    - name: static-{{ .name }}
      {{- toYaml .volume | nindent 6 }}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.affinity }}
  affinity:
    {{- toYaml .Values.affinity | nindent 4 }}
  {{- else if eq .Values.kind "Deployment" }}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels:
                {{- include "gatehouse.selectorLabels" . | nindent 16 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    {{- $constraint := deepCopy . }}
    {{- if not $constraint.labelSelector }}
    {{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "gatehouse.selectorLabels" $ | fromYaml)) }}
    {{- end }}
    {{- list $constraint | toYaml | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}
