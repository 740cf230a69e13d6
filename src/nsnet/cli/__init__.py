"""The `nsnet` command; it talks to nsnetd only through `nsnet.client`."""
