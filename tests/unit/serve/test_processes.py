import socket

from streamlearn.serve.processes import bound_socket


def test_sockets_say_tcp_so_asyncio_sets_nodelay_on_accepted_connections():
    # a protocol of 0 made every keep-alive response wait ≈ 40 ms for a delayed ACK
    with bound_socket("127.0.0.1", 0, reuse_port=True) as sock:
        assert sock.proto == socket.IPPROTO_TCP
