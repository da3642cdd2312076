defmodule Coordination.HTTP.Request do
  @moduledoc "A parsed HTTP request."
  defstruct [:method, :path, :segments, :query, :version, :headers, :body]
  @type t :: %__MODULE__{}

  def new(method, target, version, headers, body) do
    {path, query} =
      case String.split(target, "?", parts: 2) do
        [path, query] -> {path, query}
        [path] -> {path, ""}
      end

    %__MODULE__{
      method: method |> to_string() |> String.upcase(),
      path: path,
      segments: path |> String.split("/", trim: true) |> Enum.map(&decode_segment/1),
      query: decode_query(query),
      version: version,
      headers: headers,
      body: body
    }
  end

  defp decode_segment(segment) do
    URI.decode(segment)
  rescue
    ArgumentError -> segment
  end

  defp decode_query(query) do
    URI.decode_query(query)
  rescue
    ArgumentError -> %{}
  end
end
