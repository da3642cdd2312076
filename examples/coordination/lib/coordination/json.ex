defmodule Coordination.JSON do
  @moduledoc """
  A small JSON encoder and decoder.

  The app must build offline from Debian's Elixir 1.14 (no Hex, so no Jason)
  and on Elixir 1.18 (whose `JSON` module 1.14 lacks), so it carries its own.

  Decoding yields maps with string keys, lists, binaries, integers, floats,
  `true`, `false` and `nil`. Encoding accepts the same plus atom keys/values.
  """

  defmodule DecodeError do
    defexception [:message, :position]
  end

  ## Encoding

  @spec encode!(term()) :: binary()
  def encode!(value), do: value |> encode_iodata() |> IO.iodata_to_binary()

  @spec encode_iodata(term()) :: iodata()
  def encode_iodata(nil), do: "null"
  def encode_iodata(true), do: "true"
  def encode_iodata(false), do: "false"
  def encode_iodata(value) when is_atom(value), do: encode_string(Atom.to_string(value))
  def encode_iodata(value) when is_binary(value), do: encode_string(value)
  def encode_iodata(value) when is_integer(value), do: Integer.to_string(value)
  def encode_iodata(value) when is_float(value), do: encode_float(value)

  def encode_iodata(value) when is_list(value) do
    ["[", value |> Enum.map(&encode_iodata/1) |> Enum.intersperse(","), "]"]
  end

  def encode_iodata(value) when is_map(value) do
    members =
      value
      |> Enum.sort_by(fn {key, _} -> key_string(key) end)
      |> Enum.map(fn {key, member} -> [encode_string(key_string(key)), ":", encode_iodata(member)] end)
      |> Enum.intersperse(",")

    ["{", members, "}"]
  end

  def encode_iodata(value) do
    raise ArgumentError, "cannot encode #{inspect(value)} as JSON"
  end

  defp key_string(key) when is_binary(key), do: key
  defp key_string(key) when is_atom(key), do: Atom.to_string(key)
  defp key_string(key) when is_integer(key), do: Integer.to_string(key)

  # :short gives the shortest text that reads back as the same float.
  defp encode_float(value), do: :erlang.float_to_binary(value, [:short])

  defp encode_string(string) do
    unless String.valid?(string) do
      raise ArgumentError, "cannot encode non-UTF-8 binary #{inspect(string)} as JSON"
    end

    [?", escape(string, []), ?"]
  end

  defp escape(<<>>, acc), do: Enum.reverse(acc)
  defp escape(<<?", rest::binary>>, acc), do: escape(rest, ["\\\"" | acc])
  defp escape(<<?\\, rest::binary>>, acc), do: escape(rest, ["\\\\" | acc])
  defp escape(<<?\n, rest::binary>>, acc), do: escape(rest, ["\\n" | acc])
  defp escape(<<?\r, rest::binary>>, acc), do: escape(rest, ["\\r" | acc])
  defp escape(<<?\t, rest::binary>>, acc), do: escape(rest, ["\\t" | acc])
  defp escape(<<?\b, rest::binary>>, acc), do: escape(rest, ["\\b" | acc])
  defp escape(<<?\f, rest::binary>>, acc), do: escape(rest, ["\\f" | acc])

  defp escape(<<c, rest::binary>>, acc) when c < 0x20 do
    escape(rest, ["\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0") | acc])
  end

  # U+2028/2029 are valid JSON but break JavaScript string literals.
  defp escape(<<0x2028::utf8, rest::binary>>, acc), do: escape(rest, ["\\u2028" | acc])
  defp escape(<<0x2029::utf8, rest::binary>>, acc), do: escape(rest, ["\\u2029" | acc])
  defp escape(<<c::utf8, rest::binary>>, acc), do: escape(rest, [<<c::utf8>> | acc])

  ## Decoding

  @spec decode(binary()) :: {:ok, term()} | {:error, DecodeError.t()}
  def decode(text) when is_binary(text) do
    {value, rest} = text |> skip_ws() |> value(text)

    case skip_ws(rest) do
      "" -> {:ok, value}
      trailing -> fail(text, trailing, "unexpected trailing data")
    end
  catch
    {:json_error, %DecodeError{} = error} -> {:error, error}
  end

  @spec decode!(binary()) :: term()
  def decode!(text) do
    case decode(text) do
      {:ok, value} -> value
      {:error, error} -> raise error
    end
  end

  defp value(<<?{, rest::binary>>, all), do: object(skip_ws(rest), all, %{})
  defp value(<<?[, rest::binary>>, all), do: array(skip_ws(rest), all, [])
  defp value(<<?", rest::binary>>, all), do: string(rest, all, [])
  defp value(<<"true", rest::binary>>, _all), do: {true, rest}
  defp value(<<"false", rest::binary>>, _all), do: {false, rest}
  defp value(<<"null", rest::binary>>, _all), do: {nil, rest}
  defp value(<<c, _::binary>> = rest, all) when c == ?- or c in ?0..?9, do: number(rest, all)
  defp value("", all), do: fail(all, "", "unexpected end of input")
  defp value(rest, all), do: fail(all, rest, "unexpected character")

  defp object(<<?}, rest::binary>>, _all, acc) when acc == %{}, do: {acc, rest}

  defp object(<<?", rest::binary>>, all, acc) do
    {key, rest} = string(rest, all, [])

    rest =
      case skip_ws(rest) do
        <<?:, rest::binary>> -> skip_ws(rest)
        other -> fail(all, other, "expected ':' after object key")
      end

    {member, rest} = value(rest, all)
    acc = Map.put(acc, key, member)

    case skip_ws(rest) do
      <<?,, rest::binary>> -> object(skip_ws(rest), all, acc)
      <<?}, rest::binary>> -> {acc, rest}
      other -> fail(all, other, "expected ',' or '}' in object")
    end
  end

  defp object(rest, all, _acc), do: fail(all, rest, "expected a string key in object")

  defp array(<<?], rest::binary>>, _all, []), do: {[], rest}

  defp array(rest, all, acc) do
    {element, rest} = value(rest, all)
    acc = [element | acc]

    case skip_ws(rest) do
      <<?,, rest::binary>> -> array(skip_ws(rest), all, acc)
      <<?], rest::binary>> -> {Enum.reverse(acc), rest}
      other -> fail(all, other, "expected ',' or ']' in array")
    end
  end

  defp string(<<?", rest::binary>>, _all, acc), do: {acc |> Enum.reverse() |> IO.iodata_to_binary(), rest}
  defp string(<<?\\, ?", rest::binary>>, all, acc), do: string(rest, all, [?" | acc])
  defp string(<<?\\, ?\\, rest::binary>>, all, acc), do: string(rest, all, [?\\ | acc])
  defp string(<<?\\, ?/, rest::binary>>, all, acc), do: string(rest, all, [?/ | acc])
  defp string(<<?\\, ?b, rest::binary>>, all, acc), do: string(rest, all, [?\b | acc])
  defp string(<<?\\, ?f, rest::binary>>, all, acc), do: string(rest, all, [?\f | acc])
  defp string(<<?\\, ?n, rest::binary>>, all, acc), do: string(rest, all, [?\n | acc])
  defp string(<<?\\, ?r, rest::binary>>, all, acc), do: string(rest, all, [?\r | acc])
  defp string(<<?\\, ?t, rest::binary>>, all, acc), do: string(rest, all, [?\t | acc])

  defp string(<<?\\, ?u, hex::binary-size(4), rest::binary>> = here, all, acc) do
    code = hex_value(hex, all, here)

    cond do
      code in 0xD800..0xDBFF ->
        case rest do
          <<?\\, ?u, low_hex::binary-size(4), after_low::binary>> ->
            low = hex_value(low_hex, all, rest)

            if low in 0xDC00..0xDFFF do
              combined = 0x10000 + Bitwise.bsl(code - 0xD800, 10) + (low - 0xDC00)
              string(after_low, all, [<<combined::utf8>> | acc])
            else
              fail(all, rest, "invalid low surrogate in \\u escape")
            end

          _ ->
            fail(all, here, "lone high surrogate in \\u escape")
        end

      code in 0xDC00..0xDFFF ->
        fail(all, here, "lone low surrogate in \\u escape")

      true ->
        string(rest, all, [<<code::utf8>> | acc])
    end
  end

  defp string(<<?\\, _::binary>> = rest, all, _acc), do: fail(all, rest, "invalid escape")
  defp string(<<c, _::binary>> = rest, all, _acc) when c < 0x20, do: fail(all, rest, "control character in string")
  defp string(<<c::utf8, rest::binary>>, all, acc), do: string(rest, all, [<<c::utf8>> | acc])
  defp string("", all, _acc), do: fail(all, "", "unterminated string")
  defp string(rest, all, _acc), do: fail(all, rest, "invalid UTF-8 in string")

  defp hex_value(hex, all, here) do
    case Integer.parse(hex, 16) do
      {code, ""} -> code
      _ -> fail(all, here, "invalid \\u escape")
    end
  end

  defp number(text, all) do
    {int_part, rest} = take_integer_part(text, all)
    {frac, rest} = take_fraction(rest, all)
    {exp, rest} = take_exponent(rest, all)

    if frac == "" and exp == "" do
      {String.to_integer(int_part), rest}
    else
      # Erlang's float parser insists on a fraction: "1e5" must read as "1.0e5".
      frac = if frac == "", do: ".0", else: frac
      {String.to_float(int_part <> frac <> exp), rest}
    end
  end

  defp take_integer_part(<<?-, rest::binary>>, all) do
    {digits, rest} = take_integer_part(rest, all)
    {"-" <> digits, rest}
  end

  defp take_integer_part(<<?0, rest::binary>>, _all), do: {"0", rest}

  defp take_integer_part(<<c, _::binary>> = text, _all) when c in ?1..?9, do: take_digits(text, "")
  defp take_integer_part(rest, all), do: fail(all, rest, "invalid number")

  defp take_fraction(<<?., c, _::binary>> = text, _all) when c in ?0..?9 do
    <<?., rest::binary>> = text
    {digits, rest} = take_digits(rest, "")
    {"." <> digits, rest}
  end

  defp take_fraction(<<?., _::binary>> = rest, all), do: fail(all, rest, "invalid number")
  defp take_fraction(rest, _all), do: {"", rest}

  defp take_exponent(<<e, rest::binary>> = here, all) when e in [?e, ?E] do
    {sign, rest} =
      case rest do
        <<?+, rest::binary>> -> {"+", rest}
        <<?-, rest::binary>> -> {"-", rest}
        _ -> {"", rest}
      end

    case rest do
      <<c, _::binary>> when c in ?0..?9 ->
        {digits, rest} = take_digits(rest, "")
        {"e" <> sign <> digits, rest}

      _ ->
        fail(all, here, "invalid number exponent")
    end
  end

  defp take_exponent(rest, _all), do: {"", rest}

  defp take_digits(<<c, rest::binary>>, acc) when c in ?0..?9, do: take_digits(rest, <<acc::binary, c>>)
  defp take_digits(rest, acc), do: {acc, rest}

  defp skip_ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip_ws(rest)
  defp skip_ws(rest), do: rest

  defp fail(all, rest, reason) do
    position = byte_size(all) - byte_size(rest)
    throw({:json_error, %DecodeError{message: "#{reason} at byte #{position}", position: position}})
  end
end
