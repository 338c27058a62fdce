"""Behind a load balancer, a request's REMOTE_ADDR is the balancer's: the client is named in
X-Forwarded-For, which anyone can send. Only the hops a trusted proxy
(ROSTERDROP_TRUSTED_PROXIES) added are believed, so the audit log, the login throttle (axes)
and the metrics allow list see the client's address, and no client can choose its own."""

import ipaddress

from django.http import HttpRequest, HttpResponse

from rosterdrop.networks import trusted_proxy


def client_address(remote: str, forwarded_for: str) -> str:
    """Walk X-Forwarded-For from the right (the nearest proxy wrote last), past every trusted
    proxy: the first address that is not one is the client. A hop that is not an address
    ends the walk at the last one believed."""
    client = remote
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    while trusted_proxy(client) and hops:
        hop = hops.pop()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break
        client = hop
    return client


class ForwardedForMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        remote = request.META.get("REMOTE_ADDR", "")
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded and trusted_proxy(remote):
            request.META["REMOTE_ADDR"] = client_address(remote, forwarded)
        return self.get_response(request)
