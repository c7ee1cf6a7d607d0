"""The migration at a glance: status data (status), the api-server's pages and JSON API (app), and the
Markdown run report as HTML (render)."""
