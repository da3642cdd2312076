defmodule Coordination.TestClient do
  @moduledoc "A minimal HTTP/1.1 client over :gen_tcp, so tests need nothing from Hex."

  alias Coordination.JSON

  def port, do: Coordination.HTTP.Listener.port()

  def connect do
    {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", port(), [:binary, active: false, packet: :raw], 5_000)
    socket
  end

  @doc "One request on a fresh connection that the server is asked to close."
  def request(method, path, body \\ nil, headers \\ []) do
    socket = connect()

    try do
      request_on(socket, method, path, body, [{"connection", "close"} | headers])
    after
      :gen_tcp.close(socket)
    end
  end

  @doc "A request on an open connection; returns %{status, headers, body, json}."
  def request_on(socket, method, path, body \\ nil, headers \\ []) do
    body_bin =
      case body do
        nil -> ""
        text when is_binary(text) -> text
        value -> JSON.encode!(value)
      end

    head = [
      "#{method} #{path} HTTP/1.1\r\nhost: localhost\r\n",
      Enum.map(headers, fn {k, v} -> "#{k}: #{v}\r\n" end),
      if(body_bin != "" or method == "POST", do: "content-length: #{byte_size(body_bin)}\r\n", else: ""),
      "\r\n"
    ]

    :ok = :gen_tcp.send(socket, [head, body_bin])
    read_response(socket)
  end

  def read_response(socket) do
    :ok = :inet.setopts(socket, packet: :http_bin)

    case :gen_tcp.recv(socket, 0, 10_000) do
      {:ok, {:http_response, _version, status, _reason}} ->
        headers = read_headers(socket, %{})
        :ok = :inet.setopts(socket, packet: :raw)
        length = String.to_integer(Map.get(headers, "content-length", "0"))

        body =
          if length > 0 do
            {:ok, body} = :gen_tcp.recv(socket, length, 10_000)
            body
          else
            ""
          end

        json =
          case JSON.decode(body) do
            {:ok, value} -> value
            _ -> nil
          end

        %{status: status, headers: headers, body: body, json: json}

      other ->
        {:error, other}
    end
  end

  defp read_headers(socket, acc) do
    case :gen_tcp.recv(socket, 0, 10_000) do
      {:ok, {:http_header, _, name, _, value}} ->
        read_headers(socket, Map.put(acc, name |> to_string() |> String.downcase(), value))

      {:ok, :http_eoh} ->
        acc
    end
  end
end

ExUnit.start()
