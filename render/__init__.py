"""Configuration files built from settings: pure functions from `Settings` to text.

One package per service (nginx, monitoring, firewall, ids). Nothing here registers a resource or
talks to Docker: the components upload what these build, the tests run it through the real tool
(`nginx -t`, `promtool`, `amtool`, `nft -c`, fail2ban), and the offline render writes it out.
"""
