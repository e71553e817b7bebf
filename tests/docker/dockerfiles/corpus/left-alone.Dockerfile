FROM python:3.12-slim
# Nothing here is a pip/uv install this rewrite can change safely.
RUN sh -c 'pip install requests'
RUN sudo pip install flask
RUN echo "$(pip --version)"
RUN pip download -d /wheels six
ONBUILD RUN pip install -r requirements.txt
CMD pip install nothing
