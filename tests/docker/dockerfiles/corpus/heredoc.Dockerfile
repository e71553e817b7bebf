FROM python:3.12-slim
COPY <<EOF /etc/motd
pip install is how you get things here
EOF
RUN <<EOT
set -e
pip install --no-cache-dir -r requirements.txt
python -m pip check
EOT
RUN <<-"SCRIPT" bash
	pip install \
	  requests
	SCRIPT
RUN python3 - <<'PY'
import subprocess
subprocess.run(["pip", "install", "rich"], check=True)
PY
RUN cat > /usr/local/bin/entry <<'EOF' && chmod +x /usr/local/bin/entry
#!/bin/sh
exec "$@"
EOF
