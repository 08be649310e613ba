"""qywx: operations tool and library for WeCom 代开发 (proxy-developed) login."""

__version__ = "0.1.0"
