"""Typed application keys: every long-lived object the handlers share, and nothing else."""

from aiohttp import web

from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy.service import Proxy
from cacheproxy.settings import Settings

settings_key = web.AppKey("settings_key", Settings)
metrics_key = web.AppKey("metrics_key", Metrics)
proxy_key = web.AppKey("proxy_key", Proxy)
