"""Typed application keys: every long-lived object the handlers share, and nothing else."""

import aiohttp
from aiohttp import web

from cacheproxy.figures.metrics import Metrics
from cacheproxy.proxy.downloads import Downloads
from cacheproxy.proxy.files import Files
from cacheproxy.proxy.pages import Pages
from cacheproxy.proxy.upstream import Upstream
from cacheproxy.settings import Settings
from cacheproxy.store.local import Storage

settings_key = web.AppKey("settings_key", Settings)
session_key = web.AppKey("session_key", aiohttp.ClientSession)
storage_key = web.AppKey("storage_key", Storage)
upstream_key = web.AppKey("upstream_key", Upstream)
pages_key = web.AppKey("pages_key", Pages)
files_key = web.AppKey("files_key", Files)
downloads_key = web.AppKey("downloads_key", Downloads)
metrics_key = web.AppKey("metrics_key", Metrics)
