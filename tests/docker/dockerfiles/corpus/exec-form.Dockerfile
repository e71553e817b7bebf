FROM python:3.12-slim
RUN ["pip", "install", "--no-cache-dir", "-r", "requirements.txt"]
RUN ["python3", "-m", "pip", "install", "--index-url", "https://mirror.example/simple/", "six"]
RUN [ "uv", "pip", "install", "--system", "attrs" ]
RUN ["sh", "-c", "pip install idna"]
ENTRYPOINT ["python"]
