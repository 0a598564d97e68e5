"""The console: a browser view of the fleet at /ui, served by the gateway itself.

The page is static files (plain ES modules and two vendored libraries, no build step); everything it
shows comes from the public API with the key typed into the page, so it sees what that key may.
"""

from modelfleet.console.serve import console_routes

__all__ = ["console_routes"]
