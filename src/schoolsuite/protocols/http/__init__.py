"""The HTTPS site: well-known redirects, DAV and file mounts, admin API."""
