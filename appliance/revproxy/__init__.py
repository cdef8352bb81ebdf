"""A web server (nginx or Apache) in front of the appliance's proxy: TLS, one
public name, websockets, an optional site-wide password. `site` renders the
configuration from the shipped templates, `layout` says where each distribution
keeps it, `install` changes the web server as one step that is undone if its
check or reload fails, `htpasswd` writes the password file. applctl drives them
(appliance/cli/proxy.py); all of it runs as root.
"""
