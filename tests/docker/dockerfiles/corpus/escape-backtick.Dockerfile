# escape=`
FROM python:3.12-windowsservercore
RUN pip install `
    --no-cache-dir `
    requests
RUN echo C:\path\ 
