{#- HL7 v2 helpers for the hl7v2 staging models (dialect differences behind adapter.dispatch). -#}

{#- An HL7 v2 timestamp (TS/DTM: YYYYMMDD[HH[MM[SS[.S+]]]][+/-ZZZZ]) as a UTC timestamp, or
    null when the text is not one (a wrong length, month 13, 30 February ...). The offset is
    the sender's local offset from UTC and is taken off; a time without one is taken as UTC. -#}
{% macro hp_hl7_timestamp(expression) -%}
    {{ return(adapter.dispatch('hp_hl7_timestamp', 'healthpipe')(expression)) }}
{%- endmacro %}

{#- Year, month, day, hour, minute, second in range, then fraction and offset (shared regex). -#}
{% macro hp_hl7_timestamp_pattern() -%}
    '^[0-9]{4}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])(([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9]([.][0-9]{1,6})?)?)?)?([+-]([01][0-9]|2[0-3])[0-5][0-9])?$'
{%- endmacro %}

{#- Minutes east of UTC in the timestamp's offset (0 without one). -#}
{% macro hp_hl7_offset_minutes(expression) -%}
    case when {{ expression }} like '%+____' or {{ expression }} like '%-____'
         then (case when substr({{ expression }}, length({{ expression }}) - 4, 1) = '-' then -1 else 1 end)
              * (cast(substr({{ expression }}, length({{ expression }}) - 3, 2) as integer) * 60
                 + cast(substr({{ expression }}, length({{ expression }}) - 1, 2) as integer))
         else 0 end
{%- endmacro %}

{% macro default__hp_hl7_timestamp(expression) -%}
    {%- set digits = "rpad(substring(" ~ expression ~ " from '^[0-9]+'), 14, '0')" -%}
    (case when {{ expression }} ~ {{ hp_hl7_timestamp_pattern() }}
          then case when cast(substr({{ expression }}, 7, 2) as integer) <= extract(day from
                        cast(substr({{ expression }}, 1, 4) || '-' || substr({{ expression }}, 5, 2) || '-01' as date)
                        + interval '1 month' - interval '1 day')
                    then cast(substr({{ digits }}, 1, 4) || '-' || substr({{ digits }}, 5, 2) || '-'
                              || substr({{ digits }}, 7, 2) || ' ' || substr({{ digits }}, 9, 2) || ':'
                              || substr({{ digits }}, 11, 2) || ':' || substr({{ digits }}, 13, 2) as timestamp)
                         + coalesce(cast('0' || substring({{ expression }} from '[.][0-9]+') as double precision), 0)
                           * interval '1 second'
                         - ({{ hp_hl7_offset_minutes(expression) }}) * interval '1 minute'
               end
     end)
{%- endmacro %}

{% macro duckdb__hp_hl7_timestamp(expression) -%}
    (case when regexp_matches({{ expression }}, {{ hp_hl7_timestamp_pattern() }})
          then try_strptime(rpad(regexp_extract({{ expression }}, '^[0-9]+'), 14, '0'), '%Y%m%d%H%M%S')
               + to_microseconds(cast(round(coalesce(try_cast('0' || regexp_extract({{ expression }}, '[.][0-9]+') as double), 0) * 1000000) as bigint))
               - to_minutes(cast({{ hp_hl7_offset_minutes(expression) }} as bigint))
     end)
{%- endmacro %}
