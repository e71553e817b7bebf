FROM debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv
RUN pip3 install requests
RUN pip3 install --break-system-packages flask
RUN python3 -m venv /opt/venv
RUN /opt/venv/bin/pip install gunicorn
