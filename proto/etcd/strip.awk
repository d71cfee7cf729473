# Strips from one of etcd's .proto files what protoc-c cannot use: the
# gogoproto and google.api imports, file options of gogoproto, the
# "option (google.api.http) = { ... };" blocks of the RPCs (braces counted,
# so additional_bindings go too), and [(gogoproto.*) = ...] field options.
# Everything else, comments included, passes unchanged.
#
#   awk -f strip.awk rpc.proto > stripped/rpc.proto

skip {
	depth += gsub(/\{/, "{")
	depth -= gsub(/\}/, "}")
	if (depth <= 0)
		skip = 0
	next
}
/^[ \t]*import[ \t]+"(gogoproto|google\/api)\// { next }
/^[ \t]*option[ \t]+\(gogoproto\./ { next }
/^[ \t]*option[ \t]+\(google\.api\.http\)/ {
	depth = gsub(/\{/, "{")
	depth -= gsub(/\}/, "}")
	skip = depth > 0
	next
}
{
	gsub(/[ \t]*\[\(gogoproto\.[^]]*\]/, "")
	print
}
