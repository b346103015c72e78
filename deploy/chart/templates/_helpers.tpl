{{/* Full name: the release name, unless it already is or contains the chart name. */}}
{{- define "isoobs.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "isoobs.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: daemon
{{- end -}}

{{- define "isoobs.labels" -}}
{{ include "isoobs.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "isoobs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "isoobs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "isoobs.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The directory of hubble.address when it is a unix:// socket, else empty. Only this directory is
mounted for Hubble (never the socket file: the agent recreates the socket on every start, and a bind
mount of the file would keep the old one). */}}
{{- define "isoobs.hubbleSocketDir" -}}
{{- if hasPrefix "unix://" .Values.hubble.address -}}
{{- dir (clean (trimPrefix "unix://" .Values.hubble.address)) -}}
{{- end -}}
{{- end -}}

{{/* isoobs.checkHostPath (list NAME PATH) fails the render when a hostPath would let the daemon
reach Cilium's agent API (cilium.sock), its monitor or health sockets: Cilium's run directory
(/var/run/cilium = /run/cilium), any directory above it, or one of Cilium's own directories inside
it (state, envoy, hubble: the flow exporter's files). read-only does not stop connect(). */}}
{{- define "isoobs.checkHostPath" -}}
{{- $name := index . 0 -}}
{{- $p := clean (index . 1) -}}
{{- $n := $p -}}
{{- if hasPrefix "/var/run/" (printf "%s/" $p) -}}
{{- $n = printf "/run%s" (trimPrefix "/var/run" $p) -}}
{{- end -}}
{{- if or (eq $p "/") (hasPrefix (printf "%s/" $p) "/var/run/cilium/") (hasPrefix (printf "%s/" $n) "/run/cilium/") (has $n (list "/run/cilium/state" "/run/cilium/envoy" "/run/cilium/hubble")) -}}
{{- fail (printf "%s: mounting %s would let the daemon connect to Cilium's agent API (cilium.sock) and monitor sockets, not only Hubble's: give Hubble's socket a directory of its own (Cilium's hubble.socketPath, e.g. /var/run/cilium/hubble-socket/hubble.sock, as kubectl isoobs install sets it) or set hubble.address=off" $name $p) -}}
{{- end -}}
{{- end -}}
