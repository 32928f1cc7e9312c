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

{{/* Labels every object carries. */}}
{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ include "gatehouse.chart" . }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gatehouse
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
{{- if and (ne .Values.service.type "NodePort") (ne .Values.service.type "LoadBalancer") (or .Values.service.nodePorts.http .Values.service.nodePorts.https) }}
{{- fail "service.nodePorts needs service.type NodePort or LoadBalancer" }}
{{- end }}
{{- $seen := dict }}
{{- range .Values.staticVolumes }}
{{- if hasKey $seen .name }}
{{- fail (printf "staticVolumes: name %q is used twice" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- end }}

{{/* The gateway's command line. */}}
{{- define "gatehouse.args" -}}
- "--http-listen=0.0.0.0:8080"
- "--https-listen=0.0.0.0:8443"
- "--admin-listen=0.0.0.0:9090"
- {{ printf "--ingress-class=%s" .Values.ingressClass.name | quote }}
- "--controller-name=gatehouse.dev/ingress-controller"
{{- if .Values.publishService.enabled }}
- {{ printf "--publish-service=%s/%s" .Release.Namespace (include "gatehouse.fullname" .) | quote }}
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
{{- end }}
{{- if .Values.defaultCertificate }}
- {{ printf "--default-certificate=%s" .Values.defaultCertificate | quote }}
{{- end }}
- "--log-format=json"
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* Pod template shared by the Deployment and the DaemonSet. */}}
{{- define "gatehouse.podTemplate" -}}
metadata:
  labels:
    {{- include "gatehouse.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
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
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
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
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
          {{- if eq .Values.kind "DaemonSet" }}
          hostPort: {{ .Values.daemonset.hostPorts.http }}
          {{- end }}
        - name: https
          containerPort: 8443
          protocol: TCP
          {{- if eq .Values.kind "DaemonSet" }}
          hostPort: {{ .Values.daemonset.hostPorts.https }}
          {{- end }}
        - name: admin
          containerPort: 9090
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /healthz
          port: admin
        periodSeconds: 10
        timeoutSeconds: 2
        failureThreshold: 3
      readinessProbe:
        httpGet:
          path: /readyz
          port: admin
        periodSeconds: 5
        timeoutSeconds: 2
        failureThreshold: 2
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        readOnlyRootFilesystem: true
        allowPrivilegeEscalation: false
        privileged: false
        capabilities:
          drop:
            - ALL
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: state
          mountPath: /var/run/gatehouse
        - name: tmp
          mountPath: /tmp
        {{- range .Values.staticVolumes }}
        - name: static-{{ .name }}
          mountPath: {{ .mountPath }}
          readOnly: true
        {{- end }}
  volumes:
    - name: state
      emptyDir:
        sizeLimit: 64Mi
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- range .Values.staticVolumes }}
    - name: static-{{ .name }}
      {{- toYaml .volume | nindent 6 }}
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
{{- end }}
