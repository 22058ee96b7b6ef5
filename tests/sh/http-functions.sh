# Helpers for the HTTP blob tests: a private nginx on a free loopback port.
# Source after functions.sh.
#
#   free_port                  print a TCP port free on 127.0.0.1 right now
#   start_nginx ROOT [EXTRA]   serve ROOT over http://127.0.0.1:$NGINX_PORT/ (and,
#                              with NGINX_TLS=1, https on $NGINX_TLS_PORT with
#                              HTTP/2, certificate $TMP/tls/ca.pem); EXTRA is put
#                              in each server block, $NGINX_HTTP_EXTRA in the http
#                              block.  Stopped at exit.
#   stop_nginx                 stop it (and wait until it is gone)

free_port() {
	"$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

make_tls_cert() {
	mkdir -p "$TMP/tls"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
		-addext "subjectAltName=IP:127.0.0.1" \
		-keyout "$TMP/tls/key.pem" -out "$TMP/tls/ca.pem" >/dev/null 2>&1 ||
		fail "openssl could not make a test certificate"
}

NGINX_PID=
start_nginx() {
	requires nginx
	local root=$1 extra=${2:-} dir="$TMP/nginx" try
	mkdir -p "$dir/logs" "$dir/tmp"
	chmod 755 "$TMP" "$root"
	if [[ ${NGINX_TLS:-0} == 1 && ! -f $TMP/tls/ca.pem ]]; then
		requires openssl
		make_tls_cert
	fi
	for try in 1 2 3 4 5; do
		NGINX_PORT=$(free_port)
		NGINX_TLS_PORT=$(free_port)
		local tls=""
		if [[ ${NGINX_TLS:-0} == 1 ]]; then
			tls="server { listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
				ssl_certificate $TMP/tls/ca.pem; ssl_certificate_key $TMP/tls/key.pem;
				root $root; $extra }"
		fi
		cat >"$dir/nginx.conf" <<-EOF
			user $(id -un);
			daemon off;
			worker_processes 1;
			pid $dir/nginx.pid;
			error_log $dir/logs/error.log;
			events { worker_connections 1024; }
			http {
				access_log off;
				sendfile on;
				keepalive_requests 100000;
				client_body_temp_path $dir/tmp/body;
				proxy_temp_path $dir/tmp/proxy;
				fastcgi_temp_path $dir/tmp/fastcgi;
				uwsgi_temp_path $dir/tmp/uwsgi;
				scgi_temp_path $dir/tmp/scgi;
				default_type application/octet-stream;
				${NGINX_HTTP_EXTRA:-}
				server { listen 127.0.0.1:$NGINX_PORT; root $root; $extra }
				$tls
			}
		EOF
		nginx -e "$dir/logs/error.log" -p "$dir" -c "$dir/nginx.conf" &
		NGINX_PID=$!
		local i
		for ((i = 0; i < 200; i++)); do
			if ! kill -0 "$NGINX_PID" 2>/dev/null; then
				break
			fi
			if "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', $NGINX_PORT), 1)" 2>/dev/null; then
				cleanup_fn stop_nginx
				return 0
			fi
			sleep 0.05
		done
		kill "$NGINX_PID" 2>/dev/null || true
		wait "$NGINX_PID" 2>/dev/null || true
		NGINX_PID=
	done
	fail "nginx did not start: $(tail -5 "$dir/logs/error.log" 2>/dev/null)"
}

stop_nginx() {
	if [[ -n $NGINX_PID ]]; then
		kill "$NGINX_PID" 2>/dev/null || true
		wait "$NGINX_PID" 2>/dev/null || true
		NGINX_PID=
	fi
}
