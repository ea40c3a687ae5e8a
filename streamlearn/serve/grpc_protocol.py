"""The Open Inference Protocol's gRPC messages (KServe v2 ``grpc_predict_v2.proto``), built at
import time in a private descriptor pool: no generated code, no protoc step.

:data:`PROTO` is the protocol's ``.proto`` (github.com/kserve/open-inference-protocol,
``specification/protocol/open_inference_grpc.proto``) for the messages of the six RPCs served,
one field per line, in its own syntax: package ``inference``, the same names, types and field
numbers, so Triton's and KServe's clients read and write these messages unchanged (a test
compares every field with tritonclient's generated descriptors). Why not generated
``_pb2.py`` files: generated code registers ``inference.*`` in protobuf's default pool, where
tritonclient's and KServe's own generated modules register the same names, and a process that
imports both (a test, a load generator, a KServe transformer) fails with "duplicate symbol";
and generated code pins the protobuf runtime it was generated for. A private pool has neither
problem, and the table below stays as readable as the ``.proto``.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

__all__ = [
    "PROTO",
    "SERVICE",
    "ModelInferRequest",
    "ModelInferResponse",
    "ModelMetadataRequest",
    "ModelMetadataResponse",
    "ModelReadyRequest",
    "ModelReadyResponse",
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
]

SERVICE = "inference.GRPCInferenceService"
_PACKAGE = "inference"

# message → its fields, "[repeated |oneof NAME ]TYPE name = N" or "map<K, V> name = N"; a nested
# message is "Outer.Inner", and a field's message type is looked up in its message first
PROTO: dict[str, tuple[str, ...]] = {
    "ServerLiveRequest": (),
    "ServerLiveResponse": ("bool live = 1",),
    "ServerReadyRequest": (),
    "ServerReadyResponse": ("bool ready = 1",),
    "ModelReadyRequest": ("string name = 1", "string version = 2"),
    "ModelReadyResponse": ("bool ready = 1",),
    "ServerMetadataRequest": (),
    "ServerMetadataResponse": (
        "string name = 1",
        "string version = 2",
        "repeated string extensions = 3",
    ),
    "ModelMetadataRequest": ("string name = 1", "string version = 2"),
    "ModelMetadataResponse": (
        "string name = 1",
        "repeated string versions = 2",
        "string platform = 3",
        "repeated TensorMetadata inputs = 4",
        "repeated TensorMetadata outputs = 5",
        "map<string, string> properties = 6",
    ),
    "ModelMetadataResponse.TensorMetadata": (
        "string name = 1",
        "string datatype = 2",
        "repeated int64 shape = 3",
    ),
    "ModelInferRequest": (
        "string model_name = 1",
        "string model_version = 2",
        "string id = 3",
        "map<string, InferParameter> parameters = 4",
        "repeated InferInputTensor inputs = 5",
        "repeated InferRequestedOutputTensor outputs = 6",
        "repeated bytes raw_input_contents = 7",
    ),
    "ModelInferRequest.InferInputTensor": (
        "string name = 1",
        "string datatype = 2",
        "repeated int64 shape = 3",
        "map<string, InferParameter> parameters = 4",
        "InferTensorContents contents = 5",
    ),
    "ModelInferRequest.InferRequestedOutputTensor": (
        "string name = 1",
        "map<string, InferParameter> parameters = 2",
    ),
    "ModelInferResponse": (
        "string model_name = 1",
        "string model_version = 2",
        "string id = 3",
        "map<string, InferParameter> parameters = 4",
        "repeated InferOutputTensor outputs = 5",
        "repeated bytes raw_output_contents = 6",
    ),
    "ModelInferResponse.InferOutputTensor": (
        "string name = 1",
        "string datatype = 2",
        "repeated int64 shape = 3",
        "map<string, InferParameter> parameters = 4",
        "InferTensorContents contents = 5",
    ),
    "InferParameter": (
        "oneof parameter_choice bool bool_param = 1",
        "oneof parameter_choice int64 int64_param = 2",
        "oneof parameter_choice string string_param = 3",
        "oneof parameter_choice double double_param = 4",
        "oneof parameter_choice uint64 uint64_param = 5",
    ),
    "InferTensorContents": (
        "repeated bool bool_contents = 1",
        "repeated int32 int_contents = 2",
        "repeated int64 int64_contents = 3",
        "repeated uint32 uint_contents = 4",
        "repeated uint64 uint64_contents = 5",
        "repeated float fp32_contents = 6",
        "repeated double fp64_contents = 7",
        "repeated bytes bytes_contents = 8",
    ),
}

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
}  # fmt: skip


def _set_type(field: descriptor_pb2.FieldDescriptorProto, type_: str, scope: str) -> None:
    """A scalar, or a message looked up in ``scope`` first, then at the top (as protoc does)."""
    if type_ in _SCALARS:
        field.type = _SCALARS[type_]
        return
    field.type = _F.TYPE_MESSAGE
    nested = f"{scope}.{type_}"
    field.type_name = f".{_PACKAGE}.{nested if nested in PROTO else type_}"


def _add_field(msg: descriptor_pb2.DescriptorProto, scope: str, spec: str) -> None:
    """One field of :data:`PROTO` into ``msg`` (the message ``scope``), as protoc writes it."""
    declaration, number = spec.split(" = ")
    words = declaration.replace(", ", ",").split()
    field = msg.field.add(name=words[-1], number=int(number), label=_F.LABEL_OPTIONAL)
    if words[0].startswith("map<"):  # a repeated nested message XxxEntry {key = 1; value = 2}
        key, value = words[0][4:-1].split(",")
        entry = msg.nested_type.add(name=words[-1].title().replace("_", "") + "Entry")
        entry.options.map_entry = True
        _set_type(entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL), key, scope)
        _set_type(entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL), value, scope)
        field.label, field.type = _F.LABEL_REPEATED, _F.TYPE_MESSAGE
        field.type_name = f".{_PACKAGE}.{scope}.{entry.name}"
        return
    if words[0] == "repeated":
        field.label = _F.LABEL_REPEATED
    elif words[0] == "oneof":
        oneofs = [o.name for o in msg.oneof_decl]
        if words[1] not in oneofs:
            msg.oneof_decl.add(name=words[1])
            oneofs.append(words[1])
        field.oneof_index = oneofs.index(words[1])
    _set_type(field, words[-2], scope)


def _build() -> dict[str, type[message.Message]]:
    """The top-level message classes, from :data:`PROTO` through a private pool."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="streamlearn/open_inference_grpc.proto", package=_PACKAGE, syntax="proto3"
    )
    built: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name, fields in PROTO.items():  # outer messages come before their nested ones
        outer, _, inner = name.rpartition(".")
        parent = built[outer].nested_type if outer else proto.message_type
        built[name] = msg = parent.add(name=inner)
        for spec in fields:
            _add_field(msg, name, spec)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in PROTO
        if "." not in name
    }


_CLASSES = _build()
ServerLiveRequest = _CLASSES["ServerLiveRequest"]
ServerLiveResponse = _CLASSES["ServerLiveResponse"]
ServerReadyRequest = _CLASSES["ServerReadyRequest"]
ServerReadyResponse = _CLASSES["ServerReadyResponse"]
ModelReadyRequest = _CLASSES["ModelReadyRequest"]
ModelReadyResponse = _CLASSES["ModelReadyResponse"]
ServerMetadataRequest = _CLASSES["ServerMetadataRequest"]
ServerMetadataResponse = _CLASSES["ServerMetadataResponse"]
ModelMetadataRequest = _CLASSES["ModelMetadataRequest"]
ModelMetadataResponse = _CLASSES["ModelMetadataResponse"]
ModelInferRequest = _CLASSES["ModelInferRequest"]
ModelInferResponse = _CLASSES["ModelInferResponse"]
